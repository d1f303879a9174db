"""The client's control messages, decoded straight from its JSON: {"action": "pause"}, ..."""

import msgspec


class Pause(msgspec.Struct, tag_field="action", tag="pause", forbid_unknown_fields=True):
    pass


class Resume(msgspec.Struct, tag_field="action", tag="resume", forbid_unknown_fields=True):
    pass


class Stop(msgspec.Struct, tag_field="action", tag="stop", forbid_unknown_fields=True):
    pass


class Step(msgspec.Struct, tag_field="action", tag="step", forbid_unknown_fields=True):
    pass


class Ack(msgspec.Struct, tag_field="action", tag="ack", forbid_unknown_fields=True):
    pass


class Seek(msgspec.Struct, tag_field="action", tag="seek", forbid_unknown_fields=True):
    seq: int | None = None
    ts: str | None = None


class ChangePace(msgspec.Struct, tag_field="action", tag="speed", forbid_unknown_fields=True):
    step_seconds: float | None = None
    speed: float | None = None


Command = Pause | Resume | Stop | Step | Ack | Seek | ChangePace
