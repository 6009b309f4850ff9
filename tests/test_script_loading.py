"""The webui script loads this extension's package under a private name, so an extension that provides its own
top-level ``deepcache`` (aria1th/sd-webui-deepcache-standalone has ``deepcache.py``) and this one never break
each other's imports, in either loading order. Run in a fresh interpreter with small doubles of the webui
modules the script imports."""
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "deepcache.py"

PROGRAM = textwrap.dedent("""
    import importlib.machinery, importlib.util, sys, types

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class Script:
        pass

    module("modules").__path__ = []
    module("modules.script_callbacks", **{name: lambda *a, **k: None for name in (
        "on_ui_settings", "on_before_ui", "on_cfg_denoiser", "on_script_unloaded", "on_app_started")})
    module("modules.scripts", Script=Script, AlwaysVisible=object(), scripts_data=[])
    module("modules.shared", opts=types.SimpleNamespace(data={}))
    module("modules.ui_components", InputAccordion=None)
    module("modules.sd_samplers_cfg_denoiser")
    module("gradio")
    peer = module("deepcache", DeepCacheSession=object)  # the peer's top-level module, loaded ORDER

    def load_ours():
        spec = importlib.util.spec_from_file_location("deepcache.py", SCRIPT_PATH)
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        return script

    if "ORDER" == "after":
        del sys.modules["deepcache"]
        ours = load_ours()
        sys.modules["deepcache"] = peer
    else:
        ours = load_ours()
    import deepcache
    assert deepcache is peer, deepcache
    assert type(ours.session).__module__ == "sd_webui_deepcache_engine.session"
    assert ours.DeepCacheScript().title() == "DeepCache"
    print("loaded")
""")


def test_the_script_loads_beside_a_peers_top_level_deepcache_module(tmp_path):
    for order in ("before", "after"):
        program = PROGRAM.replace("ORDER", order).replace("SCRIPT_PATH", repr(str(SCRIPT)))
        result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-3000:]
