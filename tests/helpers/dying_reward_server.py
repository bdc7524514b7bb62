"""A reward server whose reward kills the process mid-request (for tests/test_reward_server.py)."""

import os
import sys

from rewards import Reward, register_reward
from rewards.server import main


@register_reward("dies_mid_request")
class DiesMidRequest(Reward):
    def score(self, images, prompts, metadata):
        os._exit(3)  # the connection drops with no reply, as when a worker is killed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
