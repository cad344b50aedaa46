"""`python -m wiretide.gateway` runs the gateway service."""

from wiretide.common.service import main
from wiretide.gateway.service import GatewayService

if __name__ == "__main__":
    main(GatewayService)
