"""`python -m serving ...`: run the model server (its flags: `python -m serving --help`)."""

import sys


def run() -> int:
    from serving.kserve_compat import import_kserve

    # First, before any module of the package imports kserve: run as a program, the command line
    # is the server's, and KServe's own parser reads it as kserve is imported.
    import_kserve(read_command_line=True)
    from serving.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
