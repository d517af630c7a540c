"""studio.config.settings: every environment variable studio reads (the settings, the embedded servers, the
Procfile) is listed in .env.example and in the README settings table."""

import re

from tests.support import ROOT


def _variables_read() -> set[str]:
    names = set(re.findall(r'env\.\w+\("([A-Z_]+)"', (ROOT / "studio" / "config" / "settings.py").read_text()))
    embedded = (ROOT / "studio" / "devstack" / "embedded.py").read_text()
    names |= set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', embedded))
    names |= set(re.findall(r"\$\{([A-Z_]+):-", (ROOT / "Procfile").read_text()))
    return names


def test_every_setting_is_in_env_example():
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert _variables_read() - example == set()


def test_every_setting_is_in_readme():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in _variables_read() if f"`{name}`" not in readme)
    assert missing == []
