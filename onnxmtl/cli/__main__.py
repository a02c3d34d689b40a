"""`python -m onnxmtl.cli` (as torchrun runs it)."""

import sys

from onnxmtl.cli.main import main

sys.exit(main())
