"""serving/kserve_compat.py is the only module of `serving` that touches KServe's internals, so
that a KServe upgrade changes that one file.

Read from the sources (no import): every other module gets kserve from
`kserve_compat.import_kserve()` (importing it directly would let KServe parse the host
program's command line), and uses only the public model API on it.
"""

import ast
from pathlib import Path

import pytest

SERVING = Path(__file__).resolve().parents[2] / "serving"
COMPAT = SERVING / "kserve_compat.py"
# Attributes that reach into KServe's server stack (kserve.model_server, kserve.protocol.rest,
# kserve.constants, a RESTServer's uvicorn config and data plane), not its model API.
INTERNAL_ATTRIBUTES = {
    "model_server",
    "protocol",
    "constants",
    "config",
    "dataplane",
    "model_repository_extension",
    "create_application",
}


def internal_uses(path: Path) -> list[str]:
    """What in a module's source touches KServe's internals, one "line: what" each."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        where = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if _is_kserve(a.name)]
        elif isinstance(node, ast.ImportFrom) and _is_kserve(node.module or ""):
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module == "uvicorn.importer":
            found.append(f"{where}: from uvicorn.importer import ... (how KServe finds its app)")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner == "sys" and node.attr == "argv":
                found.append(f"{where}: sys.argv")
            elif node.attr in INTERNAL_ATTRIBUTES:
                found.append(f"{where}: .{node.attr}")
            elif _is_private(node.attr) and owner not in ("self", "cls"):
                # Another object's private attribute, e.g. a RESTServer's `_server`.
                found.append(f"{where}: .{node.attr}")
    return found


def _is_kserve(module: str) -> bool:
    return module == "kserve" or module.startswith("kserve.")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize(
    "module",
    # Every module, in subpackages too, should the package grow any.
    sorted(str(p.relative_to(SERVING)) for p in SERVING.rglob("*.py") if p != COMPAT),
)
def test_only_kserve_compat_touches_kserve_internals(module):
    uses = internal_uses(SERVING / module)
    assert not uses, (
        f"serving/{module} touches KServe internals (put them in kserve_compat.py): {uses}"
    )


def test_the_check_finds_what_kserve_compat_wraps():
    """The same check, on kserve_compat itself, finds the internals it is there to hold: so an
    empty answer for the other modules means something."""
    uses = "\n".join(internal_uses(COMPAT))
    for expected in (
        "sys.argv",
        ".model_server",
        "from kserve.protocol.rest.server import",
        "from kserve.constants.constants import",
        ".config",
        "._server",
        ".dataplane",
        ".create_application",
    ):
        assert expected in uses, expected


@pytest.mark.parametrize("trace_level", ["WARNING", "INFO"])
def test_kserve_timing_middleware_runs_only_when_its_log_is_on(trace_level):
    """Its one product is an INFO line of the kserve.trace logger: off with that log off."""
    import logging

    from fastapi import FastAPI
    from timing_asgi import TimingMiddleware

    from serving.kserve_compat import _drop_silent_timing

    logger = logging.getLogger("kserve.trace")
    saved = logger.level
    app = FastAPI()
    app.add_middleware(TimingMiddleware, client=None)
    try:
        logger.setLevel(trace_level)
        _drop_silent_timing(app)
    finally:
        logger.setLevel(saved)
    kept = [m.cls for m in app.user_middleware]
    assert (TimingMiddleware in kept) == (trace_level == "INFO")
