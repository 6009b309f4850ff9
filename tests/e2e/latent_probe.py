"""A lab-only webui script that saves each generation's final latent, so drift can be measured on the latent too
(the API returns decoded images only). Not part of the extension: link it into a lab webui's ``scripts/`` folder
and start that webui with ``DEEPCACHE_LATENT_PROBE_DIR`` set; each batch's latent (after sampling, before the VAE)
is written there as ``<process id>-<counter>.npy`` (a restarted webui never overwrites a file a comparison
has already seen). Without the variable it does nothing.

    ln -s "$PWD/tests/e2e/latent_probe.py" <webui>/scripts/
    DEEPCACHE_LATENT_PROBE_DIR=/tmp/latents <start the webui>
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
from modules import scripts

_counter = itertools.count()


class LatentProbe(scripts.Script):
    def title(self) -> str:
        return "Latent probe (lab)"

    def show(self, is_img2img: bool):
        return scripts.AlwaysVisible

    def post_sample(self, p, ps, *args) -> None:
        folder = os.environ.get("DEEPCACHE_LATENT_PROBE_DIR")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            np.save(Path(folder) / f"{os.getpid()}-{next(_counter):06d}.npy", ps.samples.detach().float().cpu().numpy())
