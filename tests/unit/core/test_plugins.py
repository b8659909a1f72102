"""The one plug-in helper: discovery by module name, and a contract that names what a plug-in lacks."""

import sys

import pytest

from components.core.plugins import Contract, discover, load


@pytest.fixture()
def fake_package(tmp_path, monkeypatch):
    pkg = tmp_path / "fakeplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("")
    (pkg / "_private.py").write_text("")
    (pkg / "good.py").write_text("KIND = 'a'\ndef run():\n    return 1\n")
    (pkg / "no_run.py").write_text("KIND = 'a'\n")
    (pkg / "bad_kind.py").write_text("KIND = 'z'\ndef run():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakeplugins
    yield fakeplugins
    for name in [m for m in sys.modules if m.startswith("fakeplugins")]:
        del sys.modules[name]


def test_discover_and_check_the_contract(fake_package):
    names = discover(fake_package)
    assert names == ("bad_kind", "good", "no_run")  # base and _private are not plug-ins
    contract = Contract(kind="widget", package="fakeplugins", required=("KIND", "run"), choices=(("KIND", ("a", "b")),))
    assert load(contract, names, "good", "x.widget").run() == 1
    with pytest.raises(TypeError, match="fakeplugins/no_run.py lacks run"):
        load(contract, names, "no_run", "x.widget")
    with pytest.raises(TypeError, match="KIND 'z' must be one of"):
        load(contract, names, "bad_kind", "x.widget")
    with pytest.raises(ValueError, match="x.widget: unknown widget 'nope'; choose from bad_kind, good, no_run"):
        load(contract, names, "nope", "x.widget")


def test_methods_are_found_through_the_helper():
    from components import methods

    assert methods.NAMES == discover(methods, methods.CONTRACT.not_plugins)
    assert "lora" in methods.NAMES and "base" not in methods.NAMES
