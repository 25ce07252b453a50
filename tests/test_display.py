"""Rich display: ``__repr__`` and ``_repr_html_`` of layers, recordings and fitted scalers.

The ranges a repr shows are checked against NumPy's min/max of the State it summarises
(read back from the printed text with 4 significant digits), the HTML is parsed as XML
(well formed, one root, no script), and names from files are escaped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un
from unitnorm import preprocessing as pp
from unitnorm.io import Recording

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"


def _range(text: str, name: str) -> tuple[float, float, str]:
    """Read ``name∈[lo, hi] unit`` back from a repr."""
    m = re.search(rf"{re.escape(name)}(?:\([\d, ]*\))?∈\[({NUMBER}), ({NUMBER})\]( [^,)|]+)?", text)
    assert m is not None, f"no range for {name} in {text}"
    return float(m.group(1)), float(m.group(2)), (m.group(3) or "").strip()


def _close(printed: float, exact: float) -> bool:
    """4 significant digits: the printed number is within half a unit of its 4th digit."""
    return abs(printed - exact) <= 5e-4 * max(abs(exact), 1e-30)


def _parse(fragment: str) -> ET.Element:
    root = ET.fromstring(fragment)  # raises on anything not well formed
    assert root.tag == "div"
    assert not any(el.tag in ("script", "link", "style", "iframe") for el in root.iter())
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter("td")]


def _layers():
    """Every public layer, built small; the second entry feeds it once (None: not callable on data)."""
    x2 = np.random.default_rng(0).normal(-65.0, 0.5, (8, 4))
    x3 = np.random.default_rng(1).normal(-65.0, 0.5, (8, 5, 4))
    x4 = np.random.default_rng(2).normal(-65.0, 0.5, (2, 5, 6, 4))
    x5 = np.random.default_rng(3).normal(-65.0, 0.5, (2, 3, 3, 3, 4))
    return [
        (un.BatchNorm0d(4, in_unit=u.mV), x2),
        (un.BatchNorm1d((5, 4), in_unit=u.mV), x3),
        (un.BatchNorm2d((5, 6, 4), in_unit=u.mV), x4),
        (un.BatchNorm3d((3, 3, 3, 4), in_unit=u.mV), x5),
        (un.BatchRenorm0d(4, in_unit=u.mV), x2),
        (un.BatchRenorm1d((5, 4), in_unit=u.mV), x3),
        (un.BatchRenorm2d((5, 6, 4), in_unit=u.mV), x4),
        (un.BatchRenorm3d((3, 3, 3, 4), in_unit=u.mV), x5),
        (un.LayerNorm(4, in_unit=u.mV), x2),
        (un.RMSNorm(4, in_unit=u.mV), x2),
        (un.GroupNorm(4, num_groups=2, in_unit=u.mV), x2),
        (un.InstanceNorm((5, 4), in_unit=u.mV), x3),
        (un.SpectralNorm(jnp.ones((3, 4)) * u.mV), None),
        (un.WeightNorm(jnp.ones((3, 4)) * u.mV), None),
    ]


def test_every_public_layer_is_covered():
    classes = {type(layer).__name__ for layer, _ in _layers()}
    public = {
        n for n in un.__all__ if isinstance(getattr(un, n), type) and issubclass(getattr(un, n), un.Module)
    }
    assert public - {"Module"} == classes


@pytest.mark.parametrize(("layer", "x"), _layers(), ids=lambda v: type(v).__name__)
def test_layer_repr_and_html(layer, x):
    name = type(layer).__name__
    if x is not None:
        layer(x * u.mV)
    text = repr(layer)
    assert text.startswith(f"{name}(") and text.endswith(")") and "\n" not in text
    assert "mode=train" in text
    if hasattr(layer, "in_size"):
        assert f"in_size={tuple(layer.in_size)}" in text and "in_unit=mV" in text
    for state in ("running_mean", "running_var"):
        if getattr(layer, state, None) is None:
            continue
        value = getattr(layer, state).value
        lo, hi, unit = _range(text, state)
        m = np.asarray(value.mantissa)
        assert _close(lo, m.min()) and _close(hi, m.max()), (text, m.min(), m.max())
        assert unit == ("mV" if state == "running_mean" else "mV^2")
    weight = getattr(getattr(layer, "weight", None), "value", None)
    if isinstance(weight, dict):
        for key, v in weight.items():
            assert f"{key}{tuple(v.shape)}∈" in text
    root = _parse(layer._repr_html_())
    assert "".join(root.find("table/caption").itertext()) == name
    cells = _texts(root)
    assert "mode" in cells and "train" in cells
    if hasattr(layer, "running_mean"):
        lo, hi, unit = _range("running_mean∈" + cells[cells.index("running_mean") + 1], "running_mean")
        m = np.asarray(layer.running_mean.value.mantissa)
        assert unit == "mV" and _close(lo, m.min()) and _close(hi, m.max())


def test_modes_and_unfixed_unit():
    layer = un.BatchNorm0d(3)
    assert "in_unit=None" in repr(layer)
    assert "not fixed yet" in "".join(_texts(_parse(layer._repr_html_())))
    assert "mode=eval" in repr(layer.eval())
    assert "mode=frozen," in repr(layer.freeze())
    assert "mode=frozen (affine too)" in repr(layer.freeze(affine=True))
    fixed = un.BatchNorm0d(3, in_unit=u.UNITLESS, affine=False)
    assert "in_unit=dimensionless" in repr(fixed) and "scale" not in repr(fixed)


def test_repr_reads_a_changed_state_with_nans():
    layer = un.BatchNorm0d(4, in_unit=u.uvolt)
    layer.running_mean.value = jnp.array([1.5, np.nan, -2.25, 1e6]) * u.uvolt
    text = repr(layer)
    assert "running_mean∈[-2.25, 1e+06] uV (1 non-finite)" in text


def test_repr_inside_jit_says_traced():
    layer = un.BatchNorm0d(3, in_unit=u.mV)
    seen = []

    @jax.jit
    def step(layer, x):
        seen.append((repr(layer), layer._repr_html_()))
        return layer(x), layer

    step(layer, jnp.ones((4, 3)) * u.mV)
    text, fragment = seen[0]
    assert "running_mean∈traced mV" in text and "running_var∈traced mV^2" in text
    _parse(fragment)


def test_repr_of_a_million_features_is_short():
    layer = un.BatchNorm0d(10**6, in_unit=u.mV)
    layer.running_var.value = jnp.linspace(0.5, 2.0, 10**6) * u.mV**2
    text = repr(layer)
    assert len(text) < 300, text
    assert "running_var∈[0.5, 2] mV^2" in text
    assert len(layer._repr_html_()) < 3000


# ---------------------------------------------------------------------------- recordings


def test_recording_repr_and_html():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) * np.array([10.0, 1.0, 100.0])
    rec = Recording(x, 250 * u.Hz, channel_names=["Cz", "EMG", "MEG"], channel_units=["uV", "mV", "fT"])
    assert repr(rec) == "Recording(3 channels: Cz [uV], EMG [mV], MEG [fT]; 500 samples at 250 Hz, 2 s)"
    root = _parse(rec._repr_html_())
    caption = "".join(root.find("table/caption").itertext())
    assert caption == "Recording: 3 channels, 2 s at 250 Hz (500 samples)"
    rows = [["".join(td.itertext()) for td in tr.iter("td")] for tr in root.iter("tr")][1:]
    for j, (name, unit, span, _) in enumerate(rows):
        assert (name, unit) == (rec.channel_names[j], str(rec.channel_units[j]))
        lo, hi = (float(v) for v in re.findall(NUMBER, span))
        assert _close(lo, x[:, j].min()) and _close(hi, x[:, j].max())
    svgs = list(root.iter("{http://www.w3.org/2000/svg}svg"))
    assert len(svgs) == 3
    for svg in svgs:
        points = svg.find("{http://www.w3.org/2000/svg}polygon").get("points").split()
        assert 2 <= len(points) <= 200
        ys = np.array([float(p.split(",")[1]) for p in points])
        # the envelope spans the height: top is the maximum, bottom the minimum
        assert ys.min() == pytest.approx(1.0, abs=0.06) and ys.max() == pytest.approx(21.0, abs=0.06)


def test_recording_escapes_names_and_groups_many_channels():
    names = [f"E{i}" for i in range(19)] + ["<script>alert(1)</script>"]
    units = ["uV"] * 17 + ["fT", "mV", "mV"]
    rec = Recording(np.zeros((10, 20)), 100.0, channel_names=names, channel_units=units)
    text = repr(rec)
    assert text.startswith("Recording(20 channels: 17 in uV (E0, E1, E2, ...), 1 in fT (E17), 2 in mV")
    fragment = rec._repr_html_()
    assert "<script" not in fragment
    root = _parse(fragment)
    assert len(list(root.iter("{http://www.w3.org/2000/svg}svg"))) == 16
    note = "".join(root.find("div").itertext())
    assert "4 more channels: 1 in uV, 1 in fT, 2 in mV" in note
    escaped = Recording(np.zeros((10, 2)), 100.0, channel_names=["a", names[-1]])._repr_html_()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped
    assert names[-1] in _texts(_parse(escaped))


def test_recording_html_of_a_long_recording_reads_windows(monkeypatch):
    from unitnorm import _display

    monkeypatch.setattr(_display, "_READ_BUDGET", 1000)
    x = np.arange(20000.0)
    fragment = Recording(x * u.mV, 1000.0)._repr_html_()
    root = _parse(fragment)
    assert "100 evenly spaced windows" in fragment
    lo, hi = (float(v) for v in re.findall(NUMBER, _texts(root)[2]))
    assert lo == 0.0 and _close(hi, 19999.0)  # the first and the last window are read


def test_recording_html_never_raises():
    rec = Recording(np.zeros((10, 1)), 100.0)

    class Broken:
        n_samples = 10

        def open(self):
            raise OSError("the file went away")

    rec._source = Broken()
    assert "samples not shown: the file went away" in rec._repr_html_()


# ---------------------------------------------------------------------------- fitted scalers


@pytest.mark.parametrize("cls", [pp.StandardScaler, pp.RobustScaler, pp.QuantileScaler])
def test_scaler_repr_unfitted_and_fitted(cls):
    scaler = cls()
    assert repr(scaler) == f"{cls.__name__}(not fitted)"
    assert "not fitted" in _texts(_parse(scaler._repr_html_()))
    x = np.random.default_rng(0).normal(-65.0, [1.0, 2.0, 3.0], (200, 3))
    scaler.fit(x * u.mV)
    text = repr(scaler)
    assert text.startswith(f"{cls.__name__}(fitted: n_features_in_=3")
    name = "mean_" if cls is pp.StandardScaler else "center_"
    lo, hi, unit = _range(text, name)
    values = np.asarray(getattr(scaler, name).mantissa)
    assert unit == "mV" and _close(lo, values.min()) and _close(hi, values.max())
    lo, hi, unit = _range(text, "scale_")
    values = np.asarray(scaler.scale_.mantissa)
    assert unit == "mV" and _close(lo, values.min()) and _close(hi, values.max())
    if cls is pp.StandardScaler:
        assert _range(text, "var_")[2] == "mV^2"
        np.testing.assert_allclose(values, x.std(axis=0), rtol=1e-12)  # the numbers shown are the data's
    _parse(scaler._repr_html_())


def test_scaler_repr_shows_changed_settings_and_unit_groups():
    rec = Recording(np.random.default_rng(0).normal(size=(100, 3)), 100.0, channel_units=["uV", "fT", "mV"])
    text = repr(pp.StandardScaler(ddof=1).fit(rec))
    assert text.startswith("StandardScaler(ddof=1; fitted:")
    assert re.search(rf"mean_∈\[{NUMBER}, {NUMBER}\] uV \| {NUMBER} fT", text), text


def test_ems_repr():
    ems = pp.ExponentialMovingStandardizer(factor_new=0.1)
    assert repr(ems) == "ExponentialMovingStandardizer(factor_new=0.1; not fitted)"
    x = np.random.default_rng(0).normal(size=(50, 2))
    ems.partial_transform(jnp.asarray(x, jnp.float32) * u.uvolt)
    text = repr(ems)
    assert "unit_=uV, n_samples_seen_=50" in text
    lo, hi, unit = _range(text, "mean_")
    m = np.asarray(ems.mean_.mantissa)
    assert unit == "uV" and _close(lo, m.min()) and _close(hi, m.max())
    assert _range(text, "var_")[2] == "uV^2"
    _parse(ems._repr_html_())


def test_layers_with_brainstate_states_and_a_wrapped_layer():
    brainstate = pytest.importorskip("brainstate")
    layer = un.BatchNorm0d(3, in_unit=u.mV, param_type=brainstate.ParamState, mean_type=brainstate.BatchState)
    layer(np.arange(12.0).reshape(4, 3) * u.mV)
    text = repr(layer)
    lo, hi, unit = _range(text, "running_mean")
    m = np.asarray(layer.running_mean.value.mantissa)
    assert unit == "mV" and _close(lo, m.min()) and _close(hi, m.max())
    linear = brainstate.nn.Linear(4, 3)
    wrapped = un.SpectralNorm(linear, param="weight.weight", mean_type=brainstate.BatchState)
    assert "wraps=Linear.weight.weight" in repr(wrapped)
    _parse(wrapped._repr_html_())


def test_nan_channels_in_a_recording():
    x = np.column_stack([np.full(50, np.nan), np.r_[np.arange(25.0), np.full(25, np.nan)]])
    root = _parse(Recording(x, 10.0, channel_units="uV")._repr_html_())
    cells = _texts(root)
    assert cells[2] == "all non-finite (50)" and cells[6] == "[0, 24] (25 non-finite)"
    for svg in root.iter("{http://www.w3.org/2000/svg}polygon"):
        assert "nan" not in svg.get("points")


def test_a_channel_name_that_is_svg_markup_is_escaped():
    """Only the SVG built from numbers goes in unescaped; a name that looks like SVG is text."""
    names = ['<svg onload="alert(1)">', "b"]
    rec = Recording(np.zeros((50, 2)), 100.0, channel_names=names, channel_units=["uV", "mV"])
    fragment = rec._repr_html_()
    assert '<svg onload="alert(1)">' not in fragment and "&lt;svg onload=" in fragment
    root = _parse(fragment)
    svgs = [el for el in root.iter() if el.tag.endswith("svg")]
    assert len(svgs) == 2  # the two sparklines, nothing else
    assert not any("onload" in el.attrib for el in root.iter())


def test_bfloat16_and_complex_values_show_a_range():
    bf = un.LayerNorm(8, param_dtype=jnp.bfloat16)  # bfloat16 is a NumPy 'V' kind: read as float32
    assert "scale(8,)∈[1, 1], bias(8,)∈[0, 0]" in repr(bf)
    from unitnorm._display import value_range

    assert value_range(jnp.asarray([3 + 4j, 1j], jnp.complex64)) == "[1, 5] (magnitudes)"
