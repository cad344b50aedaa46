"""`python -m wiretide.agents` runs the agents service."""

from wiretide.agents.service import AgentsService
from wiretide.common.service import main

if __name__ == "__main__":
    main(AgentsService)
