"""The ``mailbot queue`` command line: list, show, retry, resolve, correct, confirm, reject.

What each action does is in :mod:`mailbot.admin.queue_actions`, what list and show print in
:mod:`mailbot.admin.queue_view`; here are the arguments, the confirmation on a terminal and the exit codes.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from mailbot.admin.context import AdminContext, ReviewDesk
from mailbot.admin.queue_actions import carry_out_correction, carry_out_resolve, confirm_item, reject_item, retry_items
from mailbot.admin.queue_typing import check_required, describe_plan, plan_typing
from mailbot.admin.queue_view import QueueError, find_item, list_items, queued, show_item
from mailbot.config import Settings
from mailbot.deciding import Processed


def add_queue_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser("queue", help="the review queue: list, show, retry, resolve, correct, reject")
    # accepted before the action (``queue --by alice reject X``) and after it (``queue reject X --by alice``)
    queue.add_argument("--by", default=None, help="who is acting (default: the login name)")
    acting = argparse.ArgumentParser(add_help=False)
    acting.add_argument("--by", default=argparse.SUPPRESS, help="who is acting (default: the login name)")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="what is waiting for a person", parents=[acting])
    show = actions.add_parser("show", help="everything about one item", parents=[acting])
    show.add_argument("id", help="reference, message id or queue number")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    retry = actions.add_parser(
        "retry", help="read and decide again with today's readers and configuration", parents=[acting]
    )
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true")
    retry.add_argument("--call", help="read it as this call's form (an address several calls share)")
    resolve = actions.add_parser(
        "resolve", help="type in the fields of a form the bot could not read", parents=[acting]
    )
    correct = actions.add_parser(
        "correct", help="correct the fields of an item resolved earlier (a logged revision)", parents=[acting]
    )
    for typing in (resolve, correct):
        typing.add_argument("id")
        typing.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", required=True)
        typing.add_argument(
            "--dry-run", action="store_true", help="show what would be decided and sent, change nothing"
        )
        typing.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
        typing.add_argument(
            "--allow-missing",
            action="store_true",
            help="go ahead although required fields are missing (the applicant is told what is missing)",
        )
    correct.add_argument("--answer", action="store_true", help="send the applicant a new acknowledgement")
    confirm = actions.add_parser(
        "confirm", help="apply a form held as an identity conflict (its sender is genuine)", parents=[acting]
    )
    confirm.add_argument("id")
    reject = actions.add_parser("reject", help="close an item without an application", parents=[acting])
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--notify", action="store_true", help="tell the applicant (with the reason)")


def _actor(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


def _result_line(result: Processed) -> str:
    return f"{result.message_key}: {result.outcome} ({result.reference})"


def _confirmed(question: str) -> bool:
    """On a terminal, ask; in a script (no terminal) the admin has said what to do with the options."""
    if not sys.stdin.isatty():
        return True
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def _type_in(desk: ReviewDesk, args: argparse.Namespace, correcting: bool) -> int:
    pk = find_item(desk, args.id)
    plan = plan_typing(desk, pk, args.field, correcting, answer=bool(getattr(args, "answer", False)))
    sys.stdout.write(describe_plan(desk, plan, correcting))
    check_required(plan, args.allow_missing)
    if args.dry_run:
        print("dry run: nothing was changed or sent")
        return 0
    if not args.yes and not _confirmed("Go ahead?"):
        print("nothing was changed")
        return 1
    if correcting:
        print(carry_out_correction(desk, plan, _actor(args)))
    else:
        print(_result_line(carry_out_resolve(desk, plan, _actor(args))))
    return 0


def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    with AdminContext(settings) as desk:
        try:
            if args.action == "list":
                sys.stdout.write(list_items(desk))
            elif args.action == "show":
                sys.stdout.write(show_item(desk, find_item(desk, args.id), args.json))
            elif args.action == "retry":
                pks = [m.id for m in queued(desk)] if args.all else [find_item(desk, args.id)]
                for result in retry_items(desk, pks, _actor(args), args.call):
                    print(result if isinstance(result, str) else _result_line(result))
            elif args.action in ("resolve", "correct"):
                return _type_in(desk, args, correcting=args.action == "correct")
            elif args.action == "confirm":
                print(_result_line(confirm_item(desk, find_item(desk, args.id), _actor(args))))
            elif args.action == "reject":
                print(reject_item(desk, find_item(desk, args.id), args.reason, args.notify, _actor(args)))
        except QueueError as exc:
            print(f"mailbot queue: {exc}", file=sys.stderr)
            return 1
    return 0
