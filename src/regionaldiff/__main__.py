"""``python -m regionaldiff``: same as the ``regionaldiff`` command."""

from regionaldiff.cli import main

if __name__ == "__main__":
    main()
