"""``python -m policy_sync --policy-file F --segment NAME``: run policy-sync."""

import argparse
import os

from gateway.logs import setup_helper_logging

from .service import FileSource, PolicySync


def main(argv=None):
    parser = argparse.ArgumentParser(prog="policy_sync", description=__doc__)
    parser.add_argument("--policy-file", required=True)
    parser.add_argument("--segment", required=True, help="POSIX shared-memory name, e.g. /mitrity-policy-123")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    setup_helper_logging("policy-sync", args.log_level)
    PolicySync(FileSource(os.path.abspath(args.policy_file)), args.segment, args.parent_pid).run()


if __name__ == "__main__":
    main()
