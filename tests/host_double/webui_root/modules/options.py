"""A18 modules/options.py: OptionInfo (:13, ctor params), Options.add_option (:253-256; default stored only
when config.json lacks the key), attribute read data -> default -> AttributeError (:131-141),
set(key, value, is_api=False, run_callbacks=True) -> bool (:144-170), onchange, save.
Validation the host's settings UI would do at build time (ui_settings.py:21-40,130-135) is done eagerly:
``section`` must be a 2-tuple and a non-str/int/bool default needs a ``component``."""

import json
import os


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, comment_before="", comment_after="", infotext=None,
                 restrict_api=False, category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_restart(self):
        return self.info("requires restart")

    def needs_reload_ui(self):
        return self.info("requires Reload UI")


def options_section(section_identifier, options_dict):
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        elif len(section_identifier) == 3:
            v.section = section_identifier[0:2]
            v.category_id = section_identifier[2]
    return options_dict


class Options:
    typemap = {int: float}

    def __init__(self, data_labels, restricted_opts=()):
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in self.data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts

    def __setattr__(self, key, value):
        if key in ("data_labels", "data", "restricted_opts"):
            return super().__setattr__(key, value)
        if key in self.data or key in self.data_labels:
            self.data[key] = value
            return
        return super().__setattr__(key, value)

    def __getattr__(self, item):
        if item in ("data", "data_labels", "restricted_opts"):
            raise AttributeError(item)
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(f"'Options' object has no attribute '{item}'")

    def set(self, key, value, is_api=False, run_callbacks=True):
        oldval = self.data.get(key, None)
        if oldval == value:
            return False
        info = self.data_labels.get(key)
        if info is None:
            return False
        self.data[key] = value
        if run_callbacks and info.onchange is not None:
            try:
                info.onchange()
            except Exception:
                self.data[key] = oldval
                raise
        return True

    def add_option(self, key, info):
        if not (isinstance(info.section, tuple) and len(info.section) == 2):
            raise ValueError(f"option {key}: section must be a 2-tuple (id, label), got {info.section!r}")
        if not isinstance(info.default, (str, int, bool)) and info.component is None:
            raise ValueError(f"bad options item type: {type(info.default)} for key {key}")
        if info.component_args is not None and not isinstance(info.component_args, (dict,)) \
                and not callable(info.component_args):
            raise ValueError(f"option {key}: component_args must be a dict or a callable")
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def onchange(self, key, func, call=True):
        item = self.data_labels.get(key)
        item.onchange = func
        if call:
            func()

    def save(self, filename):
        with open(filename, "w", encoding="utf8") as file:
            json.dump(self.data, file, indent=4)

    def load(self, filename):
        if os.path.isfile(filename):
            with open(filename, "r", encoding="utf8") as file:
                self.data.update(json.load(file))
