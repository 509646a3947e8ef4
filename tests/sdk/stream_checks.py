"""Checks shared by the SDK tests: the Anthropic event stream's block structure."""


def check_block_indexes(events) -> None:
    """Content blocks are opened, filled and closed one at a time with dense indexes 0, 1, 2..."""
    open_index = None
    next_index = 0
    for ev in events:
        if ev.type == "content_block_start":
            assert open_index is None, f"block {ev.index} started while {open_index} is open"
            assert ev.index == next_index, f"block index {ev.index}, expected {next_index}"
            open_index = ev.index
        elif ev.type in ("content_block_delta", "text", "input_json"):
            if hasattr(ev, "index"):
                assert ev.index == open_index, f"{ev.type} for block {ev.index} while {open_index} is open"
        elif ev.type == "content_block_stop":
            assert ev.index == open_index, f"stop for block {ev.index} while {open_index} is open"
            open_index = None
            next_index += 1
    assert open_index is None, "a content block was never stopped"
    assert next_index >= 1, "no content block"
