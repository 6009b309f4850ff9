"""Telling the other DeepCache extensions apart from this one."""
from pathlib import Path

from deepcache.peers import peer_extensions

OWN = Path("/webui/extensions/sd-webui-deepcache")


def test_peer_extensions_are_named_and_this_one_is_not():
    paths = ["/webui/scripts/xyz_grid.py", str(OWN / "scripts/deepcache.py"),
             "/webui/extensions/sd-deepcache/scripts/deepcache.py",
             "/webui/extensions/sd-webui-deepcache-standalone/scripts/deepcache_script.py",
             "/webui/extensions/sd-webui-deepcache-standalone/scripts/deepcache_xyz.py",
             "/webui/extensions/sd-webui-controlnet/scripts/controlnet.py",
             "/webui/extensions/renamed-folder/scripts/deepcache.py"]
    assert peer_extensions(paths, OWN) == ["renamed-folder", "sd-deepcache", "sd-webui-deepcache-standalone"]
    assert peer_extensions(paths[:2] + paths[5:6], OWN) == []


def test_metadata_loads_this_script_before_the_peers():
    """The webui's API sends "DeepCache" to the first script with that title: ours must load first."""
    import configparser

    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[1] / "metadata.ini")
    before = {name.strip() for name in config["scripts/deepcache.py"]["Before"].split(",")}
    assert {"sd-deepcache", "sd-webui-deepcache-standalone"} <= before
