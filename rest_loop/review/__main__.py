import sys

from rest_loop.review.cli import main

sys.exit(main())
