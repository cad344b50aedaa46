"""`python -m wiretide.capture` runs the capture service."""

from wiretide.capture.service import CaptureService
from wiretide.common.service import main

if __name__ == "__main__":
    main(CaptureService)
