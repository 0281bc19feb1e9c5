import sys

from featureledger.cli.main import main

sys.exit(main())
