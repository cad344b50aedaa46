"""`python -m wiretide.dissector` runs the dissector service."""

from wiretide.common.service import main
from wiretide.dissector.service import DissectorService

if __name__ == "__main__":
    main(DissectorService)
