"""`python -m wiretide.tracer` runs the tracer service."""

from wiretide.common.service import main
from wiretide.tracer.service import TracerService

if __name__ == "__main__":
    main(TracerService)
