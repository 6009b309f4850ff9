// DeepCache: a live estimate of the speed-up under the sliders, and tooltips from the parameters' help texts.
// The numbers come from the server (deepcache/estimate.py) in the estimate element's data attributes; they are
// refreshed from its costs route (the loaded model's family, calibrated by the last run) when a control changes
// or a generation finishes.
(function() {
    function value(tab, id) {
        var el = gradioApp().querySelector('#script_' + tab + '_deepcache_' + id + ' input[type=number]');
        return el ? parseFloat(el.value) : NaN;
    }

    function fullSteps(steps, interval, start, end, finalFull) {
        // the uniform rule of deepcache/schedule.py: full outside [start, end) and in the last steps,
        // inside it the first step of the window and then every interval-th
        var full = 0, first = -1;
        for (var i = 0; i < steps; i++) {
            var inWindow = start * steps <= i + 1e-9 && i + 1e-9 < end * steps && i < steps - finalFull;
            if (!inWindow) { full++; continue; }
            if (first < 0) first = i;
            if ((i - first) % interval === 0) full++;
        }
        return full;
    }

    function schedule(tab) {
        var el = gradioApp().querySelector('#script_' + tab + '_deepcache_schedule input:checked');
        return el ? el.value : 'uniform';
    }

    function adaptiveText(span, steps, full, speedup) {
        // the adaptive schedule decides while sampling: a range, and what the last adaptive run did
        var text = 'adaptive: decided while sampling, between 1.0× and ≈' + speedup.toFixed(1) +
            '× faster (at least ' + full + ' of ' + steps + ' steps run the whole U-Net)';
        var last = span.dataset.adaptive ? JSON.parse(span.dataset.adaptive) : null;
        if (last) {
            text += '; last adaptive run (threshold ' + last.threshold + ', interval ' + last.interval + '): ' +
                last.cached + '/' + last.steps + ' steps cached, ~' + last.speedup + '×';
        }
        return text;
    }

    function update(tab, span) {
        var stepsInput = gradioApp().querySelector('#' + tab + '_steps input[type=number]');
        var steps = stepsInput ? Math.round(parseFloat(stepsInput.value)) : NaN;
        var interval = value(tab, 'interval'), branch = value(tab, 'branch');
        if (!(steps > 0 && interval >= 1 && branch >= 0)) return;
        var costs = JSON.parse(span.dataset.costs);
        var full = fullSteps(steps, interval, value(tab, 'start') || 0, isNaN(value(tab, 'end')) ? 1 : value(tab, 'end'),
            value(tab, 'final_full_steps') || 0);
        var cost = costs[Math.min(branch, costs.length - 1)];
        var speedup = steps / (full + (steps - full) * cost);
        span.textContent = (schedule(tab) === 'adaptive' ? adaptiveText(span, steps, full, speedup) :
            '≈' + speedup.toFixed(1) + '× faster (estimate): ' + full + ' of ' + steps +
            ' steps run the whole U-Net, ' + (steps - full) + ' reuse its deep features') +
            (steps < parseInt(span.dataset.fewSteps, 10) ? ' — ' + span.dataset.fewHint : '');
        span.title = 'Retrieval step costs: ' + span.dataset.source;
    }

    var lastFetch = 0;
    function refresh(tab, span) {
        // at most every 3 s: a model switch or a finished run changes the costs, a slider drag does not
        if (Date.now() - lastFetch < 3000) return;
        lastFetch = Date.now();
        fetch(span.dataset.route).then(function(response) { return response.ok ? response.json() : null; })
            .then(function(costs) {
                if (!costs || !Array.isArray(costs.costs)) return;
                ['txt2img', 'img2img'].forEach(function(other) {
                    var el = gradioApp().querySelector('#script_' + other + '_deepcache_estimate .deepcache-estimate');
                    if (!el) return;
                    el.dataset.costs = JSON.stringify(costs.costs);
                    el.dataset.source = costs.source;
                    el.dataset.adaptive = costs.adaptive ? JSON.stringify(costs.adaptive) : '';
                    update(other, el);
                });
            }).catch(function() {});
    }

    function setup(tab) {
        var span = gradioApp().querySelector('#script_' + tab + '_deepcache_estimate .deepcache-estimate');
        if (!span || span.dataset.ready) return;
        span.dataset.ready = '1';
        var help = JSON.parse(span.dataset.help);
        Object.keys(help).forEach(function(name) {
            var el = gradioApp().getElementById('script_' + tab + '_deepcache_' + name);
            if (el) el.title = help[name];
        });
        var accordion = gradioApp().getElementById('script_' + tab + '_deepcache_accordion');
        if (accordion) accordion.title = help.enabled;
        var watched = [gradioApp().getElementById(tab + '_steps')].concat(
            ['interval', 'branch', 'start', 'end', 'final_full_steps', 'schedule'].map(function(name) {
                return gradioApp().getElementById('script_' + tab + '_deepcache_' + name);
            }));
        watched.forEach(function(el) {
            if (el) ['input', 'change'].forEach(function(event) {
                el.addEventListener(event, function() { update(tab, span); refresh(tab, span); });
            });
        });
        if (accordion) accordion.addEventListener('click', function() { refresh(tab, span); });
        // a finished generation writes its infotext: its run may have recalibrated the costs (or been adaptive)
        var info = gradioApp().getElementById('html_info_' + tab);
        if (info && typeof MutationObserver === 'function') new MutationObserver(function() {
            lastFetch = 0;
            refresh(tab, span);
        })
            .observe(info, {childList: true, subtree: true, characterData: true});
        update(tab, span);
    }

    onUiLoaded(function() {
        setup('txt2img');
        setup('img2img');
    });
})();
