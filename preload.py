"""Host hook run before the WebUI parses its command line: adds ``--sadtalker-checkpoints``."""


def preload(parser) -> None:
    parser.add_argument("--sadtalker-checkpoints", type=str, default=None,
                        help="SadTalker checkpoint folder (overrides $SADTALKER_CHECKPOINTS, the setting and "
                             "models/SadTalker)")
