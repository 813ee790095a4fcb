"""The `rankswarm` command: thin entry points that parse the config first and import heavy
libraries (torch, transformers, hivemind) only inside the chosen subcommand.

  rankswarm demo        [--set peers=3 ...]          coordinator + N peers on 127.0.0.1, live progress
  rankswarm train       [-c FILE ...] [--set k=v ...] single-node training
  rankswarm node        [-c FILE ...] [--set k=v ...] one swarm peer
  rankswarm coordinator [-c FILE ...] [--set k=v ...] the swarm's coordinator (gRPC + DHT)
  rankswarm status      [--coordinator HOST:PORT]     the swarm at a glance (as the dashboard shows it)
  rankswarm admit|ban|forget KEY --token-file FILE    who may take part (docs/security.md)
  rankswarm export      RUN_DIR OUT [--dtype D]      a trained run as a save_pretrained folder
  rankswarm config show [train|node|coordinator|demo] every key with its default

A command that fails ends with its error on one line (stderr); an unexpected one prints its
traceback first. A failed `node` or `coordinator` also ends every process it started (hivemind's
averagers and DHT, its p2p daemon) and exits at once: hivemind's threads would otherwise keep a
dead peer looking alive.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback

from plumbing.config_loading import ConfigError
from plumbing.errors import StartupError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                        help="TOML config file (repeatable; later files override earlier ones)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.lr=2e-5 (repeatable; wins over files)")


def _add_coordinator_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", default="127.0.0.1:50051", help="coordinator gRPC address host:port")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the coordinator")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help=(
        "the coordinator's TLS certificate (PEM; tls/coordinator.crt next to its db_path) when it runs with tls"))


def _cmd_train(args: argparse.Namespace) -> int:
    from node.training.config import TrainConfig
    from plumbing.config_loading import load_config

    cfg = load_config(TrainConfig, args.config, args.overrides)
    from node.training.build import build_trainer

    trainer = build_trainer(cfg)
    summary = trainer.run()
    start, end = summary["eval_start"], summary["eval_end"]
    print(f"\ntrained {summary['steps']} steps in {summary['minutes']:.1f} min; outputs in {cfg.run_dir}")
    if start is not None:
        print(f"held-out greedy accuracy: {start.greedy_accuracy:.3f} -> {end.greedy_accuracy:.3f}")
    return 0


def _cmd_node(args: argparse.Namespace) -> int:
    from node.swarm.config import NodeConfig
    from plumbing.config_loading import load_config

    cfg = load_config(NodeConfig, args.config, args.overrides)
    from node.swarm.peer import main

    return main(cfg)


def _cmd_coordinator(args: argparse.Namespace) -> int:
    from coordinator.config import CoordinatorConfig
    from plumbing.config_loading import load_config

    cfg = load_config(CoordinatorConfig, args.config, args.overrides)
    from coordinator.server import main

    return main(cfg, ready_file=args.ready_file)


def _cmd_demo(args: argparse.Namespace) -> int:
    from plumbing.config_loading import load_config
    from rankswarm.config import DemoConfig
    from rankswarm.demo import run_demo

    return run_demo(load_config(DemoConfig, args.config, args.overrides))


def _client(args: argparse.Namespace, *, with_token: bool = False):
    """A CoordinatorClient for --coordinator, trusting --tls-cert and carrying the operator token if asked."""
    from pathlib import Path

    from coordinator.client import CoordinatorClient
    from plumbing.config_loading import ConfigError

    def read(path: str, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read the {what} {path}: {err.strerror or err}") from None

    cert = read(args.tls_cert, "coordinator certificate (--tls-cert)") if args.tls_cert else None
    token = None
    if with_token:
        token = os.environ.get("RANKSWARM_OPERATOR_TOKEN") or (
            read(args.token_file, "operator token (--token-file)").decode().strip() if args.token_file else None)
        if not token:
            raise ConfigError("admitting and banning needs the operator token: pass --token-file (the "
                              "coordinator's operator.token, next to its db_path) or set RANKSWARM_OPERATOR_TOKEN")
    return CoordinatorClient(args.coordinator, timeout=args.timeout, tls_cert=cert, token=token)


def _cmd_status(args: argparse.Namespace) -> int:
    from coordinator.client import CoordinatorError, render_status

    try:
        with _client(args) as client:
            print(render_status(client.swarm_state(), max_peers=args.peers))
    except CoordinatorError as err:
        print(f"rankswarm status: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_admission(args: argparse.Namespace) -> int:
    from coordinator.client import CoordinatorError
    from protos import swarm_pb2

    action = {"admit": swarm_pb2.ADMIT, "ban": swarm_pb2.BAN, "forget": swarm_pb2.FORGET}[args.command]
    try:
        with _client(args, with_token=True) as client:
            admission = client.set_admission(args.key, action)
    except CoordinatorError as err:
        print(f"rankswarm {args.command}: {err}", file=sys.stderr)
        return 1
    done = {"admit": "admitted", "ban": "banned", "forget": "forgotten"}[args.command]
    mode = "closed" if admission.closed else "open"
    print(f"{args.key}: {done} (admission list version {admission.version}: {mode} swarm, "
          f"{len(admission.admitted)} admitted, {len(admission.banned)} banned)")
def _cmd_export(args: argparse.Namespace) -> int:
    from node.training.export import export_run

    out = export_run(args.run_dir, args.out, dtype=args.dtype, checkpoint=args.checkpoint)
    print(f"exported {out.checkpoint} to {out.folder} ({out.dtype}); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out.folder)!r})")
    return 0


def _default_models() -> dict:
    from coordinator.config import CoordinatorConfig
    from node.swarm.config import NodeConfig
    from node.training.config import TrainConfig
    from rankswarm.config import DemoConfig

    return {"train": TrainConfig(), "node": NodeConfig(), "demo": DemoConfig(),
            "coordinator": CoordinatorConfig(run="my-run", db_path="runs/coordinator/history.db")}


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_default_models()[args.role].model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankswarm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="WARNING", help="python logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="single-node VERL-shaped GRPO training")
    _add_config_args(train)
    train.set_defaults(func=_cmd_train)
    node = sub.add_parser("node", help="run one swarm peer")
    _add_config_args(node)
    node.set_defaults(func=_cmd_node)
    coord = sub.add_parser("coordinator", help="run the swarm's coordinator")
    _add_config_args(coord)
    coord.add_argument("--ready-file", default=None, help="write addresses and key here (JSON) once serving")
    coord.set_defaults(func=_cmd_coordinator)
    demo = sub.add_parser("demo", help="a coordinator and N peers on this machine, with live progress")
    _add_config_args(demo)
    demo.set_defaults(func=_cmd_demo)
    status = sub.add_parser("status", help="print the swarm's state from a coordinator")
    _add_coordinator_args(status)
    status.add_argument("--peers", type=int, default=30, metavar="N", help="list at most N peers (problems first)")
    status.set_defaults(func=_cmd_status)
    for name, what in (("admit", "let an identity take part (a closed swarm needs this); lifts a ban"),
                       ("ban", "make every honest peer and the coordinator ignore an identity"),
                       ("forget", "neither admitted nor banned")):
        command = sub.add_parser(name, help=what)
        command.add_argument("key", help="the identity's key fingerprint (32 hex digits, as `rankswarm status` shows)")
        _add_coordinator_args(command)
        command.add_argument("--token-file", default=None, metavar="FILE", help=(
            "the coordinator's operator token (operator.token next to its db_path; or RANKSWARM_OPERATOR_TOKEN)"))
        command.set_defaults(func=_cmd_admission)
    export = sub.add_parser("export", help="write a run's newest checkpoint as a save_pretrained folder")
    export.add_argument("run_dir", help="the run's run_dir (holds config.resolved.json and checkpoints/)")
    export.add_argument("out", help="folder to write (config, weights, tokenizer, generation config)")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the exported weights (default float32: the checkpoint's master weights)")
    export.add_argument("--checkpoint", default=None, help="a checkpoint folder of the run (default: the newest)")
    export.set_defaults(func=_cmd_export)
    config = sub.add_parser("config", help="print the default config of a role as JSON")
    config.add_argument("action", choices=["show"])
    config.add_argument("role", nargs="?", default="train", choices=["train", "node", "coordinator", "demo"])
    config.set_defaults(func=_cmd_config)
    return parser


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, so every command stops the same clean way.

    Needed explicitly: a shell starts background jobs with SIGINT ignored and Python then keeps
    it ignored, so a demo launched that way (or its peers) would never see Ctrl-C or a stop."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def one_line(err: BaseException) -> str:
    """`Type: message` on one line (a multi-line message is joined with " | ")."""
    text = " | ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


_HIVEMIND_COMMANDS = ("node", "coordinator")  # run hivemind: threads and processes that outlive a failure


def _exit_now(code: int, last_line: str | None) -> None:
    """End the processes this one started (DHT, averagers, p2p daemon), print `last_line` after
    whatever they wrote while stopping, and exit without waiting for hivemind's threads, which are
    not daemons and would keep a failed process alive."""
    from plumbing.processes import end_descendants

    end_descendants(grace_s=2.0)
    if last_line is not None:
        print(last_line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _interrupt_on_signals()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"rankswarm: config error: {err}", file=sys.stderr)
        return 2
    except StartupError as err:  # expected failures with advice: no traceback, just what to do
        code, line = 3, f"rankswarm {args.command}: {err}"
    except KeyboardInterrupt:
        code, line = 130, "\nrankswarm: interrupted"
    except Exception as err:  # a bug or a failure nobody foresaw: the traceback, then the error on one line
        traceback.print_exc()
        code, line = 1, f"rankswarm {args.command}: failed: {one_line(err)}"
    if args.command in _HIVEMIND_COMMANDS:
        _exit_now(code, line)
    print(line, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
