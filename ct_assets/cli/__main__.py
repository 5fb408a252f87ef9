"""``python -m ct_assets.cli``: the same as the ``ct-assets`` command."""

from ct_assets.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
