"""`python -m heddle_sdk worker my_module --server ... --api-key ...`."""

from heddle_sdk.cli import main

main()
