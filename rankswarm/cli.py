"""The `rankswarm` command: thin entry points that parse the config first and import heavy
libraries (torch, transformers, hivemind) only inside the chosen subcommand.

  rankswarm demo        [--set peers=3 ...]          coordinator + N peers on 127.0.0.1, live progress
  rankswarm train       [-c FILE ...] [--set k=v ...] single-node training
  rankswarm node        [-c FILE ...] [--set k=v ...] one swarm peer
  rankswarm coordinator [-c FILE ...] [--set k=v ...] the swarm's coordinator (gRPC + DHT)
  rankswarm status      [--coordinator HOST:PORT]     the swarm at a glance (as the dashboard shows it)
  rankswarm admit|ban|forget KEY --token-file FILE    who may take part (docs/security.md)
  rankswarm export      RUN_DIR OUT [--dtype D]      a trained run as a save_pretrained folder
  rankswarm doctor      [-c FILE ...] [--set k=v ...] check a peer's set-up against its config and the swarm
  rankswarm health      --file HEARTBEAT | --url URL  is a running peer or coordinator healthy (exit 0/1)
  rankswarm config show [train|node|coordinator|demo] every key with its default
  rankswarm config resolve ROLE [-c FILE] [--set k=v] the config a command would run with

Every role also reads RANKSWARM_<ROLE>_<KEY> environment variables (sections joined by __, e.g.
RANKSWARM_NODE_DHT__INITIAL_PEERS='["/ip4/..."]'): defaults < TOML files < environment < --set.

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

from plumbing.config_loading import ConfigError, env_prefix
from plumbing.errors import StartupError

ROLES = ("train", "node", "coordinator", "demo")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                        help="TOML config file (repeatable; later files override earlier ones)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.lr=2e-5 (repeatable; wins over files and "
                             "RANKSWARM_<ROLE>_... variables)")


def _load(role: str, args: argparse.Namespace):
    """The role's config from defaults < args.config files < RANKSWARM_<ROLE>_* variables < args.overrides."""
    from plumbing.config_loading import load_config

    return load_config(_config_models()[role], args.config, args.overrides, env_prefix=env_prefix(role))


def _add_coordinator_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", default="127.0.0.1:50051", help="coordinator gRPC address host:port")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the coordinator")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help=(
        "the coordinator's TLS certificate (PEM; tls/coordinator.crt next to its db_path) when it runs with tls"))


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _load("train", args)
    from node.training.build import build_trainer

    trainer = build_trainer(cfg)
    summary = trainer.run()
    start, end = summary["eval_start"], summary["eval_end"]
    print(f"\ntrained {summary['steps']} steps in {summary['minutes']:.1f} min; outputs in {cfg.run_dir}")
    if start is not None:
        print(f"held-out greedy accuracy: {start.greedy_accuracy:.3f} -> {end.greedy_accuracy:.3f}")
    return 0


def _cmd_node(args: argparse.Namespace) -> int:
    cfg = _load("node", args)
    from node.swarm.peer import main

    return main(cfg)


def _cmd_coordinator(args: argparse.Namespace) -> int:
    cfg = _load("coordinator", args)
    from coordinator.server import main

    return main(cfg, ready_file=args.ready_file)


def _cmd_demo(args: argparse.Namespace) -> int:
    from rankswarm.demo import run_demo

    return run_demo(_load("demo", args))


def _cmd_doctor(args: argparse.Namespace) -> int:
    try:
        cfg = _load("node", args)
    except ConfigError as err:
        print(f"FAIL  config: {err}", file=sys.stderr)
        return 2
    print(f"ok    config: run {cfg.run_id}, run_dir {cfg.run_dir}", flush=True)
    from rankswarm.doctor import FAIL, run_doctor

    findings = run_doctor(cfg, coordinator=args.coordinator, max_skew=args.max_skew, timeout=args.timeout)
    failed = [f for f in findings if f.status == FAIL]
    print(f"\n{len(failed)} check(s) failed" if failed else "\nevery check passed", flush=True)
    return 1 if failed else 0


def _cmd_health(args: argparse.Namespace) -> int:
    from plumbing.health import check

    if args.url:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
                print(f"{args.url}: {response.status} {response.read(200).decode(errors='replace').strip()}")
                return 0
        except (urllib.error.URLError, OSError) as err:
            print(f"{args.url}: unhealthy ({getattr(err, 'reason', err)})", file=sys.stderr)
            return 1
    report = check(args.file, max_age=args.max_age, ready=args.ready, max_step_age=args.max_step_age)
    print(report.message, file=sys.stdout if report.healthy else sys.stderr)
    return 0 if report.healthy else 1


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
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from node.training.export import export_run

    out = export_run(args.run_dir, args.out, dtype=args.dtype, checkpoint=args.checkpoint)
    print(f"exported {out.checkpoint} to {out.folder} ({out.dtype}); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out.folder)!r})")
    return 0


def _config_models() -> dict:
    from coordinator.config import CoordinatorConfig
    from node.swarm.config import NodeConfig
    from node.training.config import TrainConfig
    from rankswarm.config import DemoConfig

    return {"train": TrainConfig, "node": NodeConfig, "coordinator": CoordinatorConfig, "demo": DemoConfig}


def _cmd_config(args: argparse.Namespace) -> int:
    if args.action == "resolve":
        cfg = _load(args.role, args)
    elif args.role == "coordinator":  # run and db_path have no default: show an example
        cfg = _config_models()["coordinator"](run="my-run", db_path="runs/coordinator/history.db")
    else:
        cfg = _config_models()[args.role]()
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
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
    doctor = sub.add_parser("doctor", help="check a peer's set-up (config, device, initial peers, reachability, "
                                           "coordinator key, clock, versions); exit 1 if a check fails")
    _add_config_args(doctor)
    doctor.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="the coordinator's gRPC address, to compare its key with coordinator.trusted_key "
                             "(default: from coordinator.bootstrap)")
    doctor.add_argument("--max-skew", type=float, default=2.0, metavar="S",
                        help="clock skew against the swarm that fails the clock check (seconds)")
    doctor.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")
    doctor.set_defaults(func=_cmd_doctor)
    health = sub.add_parser("health", help="exit 0 if the peer or coordinator is healthy (container and "
                                           "Kubernetes probes), 1 if not, saying why")
    where = health.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", help="the heartbeat the process writes (health_file; default "
                                      "health.json in a peer's run_dir or next to the coordinator's db_path)")
    where.add_argument("--url", help="an HTTP endpoint to GET instead, e.g. http://127.0.0.1:8080/healthz")
    health.add_argument("--ready", action="store_true", help="also require the process to be training or serving")
    health.add_argument("--max-age", type=float, default=30.0, metavar="S",
                        help="a heartbeat older than this means hung or gone (it is rewritten every 5 s)")
    health.add_argument("--max-step-age", type=float, default=None, metavar="S",
                        help="a training peer must have finished a step within this many seconds")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for --url")
    health.set_defaults(func=_cmd_health)
    config = sub.add_parser("config", help="print a role's default config, or the one it would run with, as JSON")
    config.add_argument("action", choices=["show", "resolve"],
                        help="show: the defaults; resolve: after -c files, RANKSWARM_<ROLE>_* variables and --set")
    config.add_argument("role", nargs="?", default="train", choices=ROLES)
    _add_config_args(config)
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
