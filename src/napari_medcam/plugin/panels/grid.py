"""Side by side: image + mask in one grid pane, image + reference in the other."""

from __future__ import annotations

from typing import Any


def viewer_grid(viewer: Any) -> Any:
    """The viewer's grid settings: ``viewer.canvas.grid`` (napari ≥ 0.9), else ``viewer.grid``."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None)
    return grid if grid is not None else viewer.grid


def enter_side_by_side(viewer: Any, source: Any, mask: Any, reference: Any) -> dict[str, Any]:
    """Show ``source`` + ``mask`` beside a twin of ``source`` + ``reference`` in a 2-pane
    grid, everything else hidden; returns what `leave_side_by_side` restores."""
    from napari.layers import Layer

    from napari_medcam.plugin.layers import own_metadata

    layers = viewer.layers
    grid = viewer_grid(viewer)
    state: dict[str, Any] = {
        "order": list(layers),
        "visible": {id(ly): ly.visible for ly in layers},
        "grid": (grid.enabled, grid.stride, grid.shape),
    }
    data, meta, kind = source.as_layer_data_tuple()
    meta = dict(
        meta,
        name=f"{source.name} (side by side)",
        metadata=own_metadata("side by side", source.name),
    )
    twin = Layer.create(data, meta, kind)
    layers.append(twin)
    state["twin"] = twin
    for i, ly in enumerate([source, mask, twin, reference]):
        layers.move(layers.index(ly), i)
    keep = {id(source), id(mask), id(twin), id(reference)}
    for ly in layers:
        ly.visible = id(ly) in keep
    grid.stride = 2
    grid.shape = (-1, -1)
    grid.enabled = True
    viewer.reset_view()  # both panes framed on the image
    return state


def leave_side_by_side(viewer: Any, state: dict[str, Any]) -> None:
    """Undo `enter_side_by_side`: the twin removed, order, visibility and grid restored."""
    layers = viewer.layers
    twin = state["twin"]
    if twin in layers:
        layers.remove(twin)
    order = [ly for ly in state["order"] if ly in layers]
    for i, ly in enumerate(order):
        layers.move(layers.index(ly), i)
    for ly in layers:
        if id(ly) in state["visible"]:
            ly.visible = state["visible"][id(ly)]
    enabled, stride, shape = state["grid"]
    grid = viewer_grid(viewer)
    grid.stride = stride
    grid.shape = shape
    grid.enabled = enabled
    viewer.reset_view()
