"""End-to-end tests against a running webui (A1111 or Forge) with this extension installed.

Set ``WEBUI_URL`` (e.g. http://127.0.0.1:7861) to run them; without it every test here is skipped.
``WEBUI_E2E_SIZE`` (default 64) and ``WEBUI_E2E_STEPS`` (default 8) size the images. ``WEBUI_E2E_MODEL`` names
the checkpoint to test with (loaded before the first test; default: the one loaded), ``WEBUI_E2E_OTHER`` the
checkpoint to switch to for the refiner and hires-checkpoint tests (e.g. the SDXL refiner; default: another
checkpoint of the A1111 lab, skipped on Forge).
"""
import pytest
from webui_client import MODEL, URL, Webui


def pytest_collection_modifyitems(items):
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if not URL:
                item.add_marker(pytest.mark.skip(reason="WEBUI_URL is not set: no webui to test against"))


@pytest.fixture(scope="session")
def webui() -> Webui:
    client = Webui(URL)
    if MODEL:
        client.load(MODEL)
    return client


