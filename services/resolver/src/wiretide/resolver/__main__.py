"""`python -m wiretide.resolver` runs the resolver service."""

from wiretide.common.service import main
from wiretide.resolver.service import ResolverService

if __name__ == "__main__":
    main(ResolverService)
