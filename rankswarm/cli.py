"""The `rankswarm` command: thin entry points that parse the config first and import heavy
libraries (torch, transformers, hivemind) only inside the chosen subcommand.

  rankswarm train  [--config FILE ...] [--set section.key=value ...]   single-node training
  rankswarm config show [train]                                       print the default config
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rankswarm.config_loading import ConfigError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                        help="TOML config file (repeatable; later files override earlier ones)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.lr=2e-5 (repeatable; wins over files)")


def _cmd_train(args: argparse.Namespace) -> int:
    from rankswarm.config_loading import load_config
    from node.training.config import TrainConfig

    cfg = load_config(TrainConfig, args.config, args.overrides)
    from node.training.build import build_trainer

    trainer = build_trainer(cfg)
    summary = trainer.run()
    start, end = summary["eval_start"], summary["eval_end"]
    print(f"\ntrained {summary['steps']} steps in {summary['minutes']:.1f} min; outputs in {cfg.run_dir}")
    if start is not None:
        print(f"held-out greedy accuracy: {start.greedy_accuracy:.3f} -> {end.greedy_accuracy:.3f}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from node.training.config import TrainConfig

    models = {"train": TrainConfig}
    print(json.dumps(models[args.role]().model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankswarm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="WARNING", help="python logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="single-node VERL-shaped GRPO training")
    _add_config_args(train)
    train.set_defaults(func=_cmd_train)
    config = sub.add_parser("config", help="print the default config of a role as JSON")
    config.add_argument("action", choices=["show"])
    config.add_argument("role", nargs="?", default="train", choices=["train"])
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"rankswarm: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nrankswarm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
