"""Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE``): a shim over
``pipelines.launch``, which the image installs with the rest of shopstream."""
import sys

from pipelines.launch import main

if __name__ == "__main__":
    sys.exit(main())
