"""``python -m coldpipe`` runs the same program as the ``coldpipe`` entry point."""

from coldpipe.cli import main

if __name__ == "__main__":
    main()
