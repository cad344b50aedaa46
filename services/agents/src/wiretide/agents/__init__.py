"""Wiretide agents: user JavaScript network agents run on the traffic."""
