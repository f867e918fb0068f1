"""``--precision bf16`` on CPU: whether the CPU has native bf16 is read from its flags."""

from __future__ import annotations

from gristmill.tuning import cpu_has_bf16


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n")
    return str(path)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse avx512f avx512_bf16 avx512_vnni")) is True
    assert cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse amx_tile amx_bf16")) is True
    assert cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse avx2 avx512f")) is False


def test_unknown_when_the_flags_cannot_be_read(tmp_path):
    assert cpu_has_bf16(str(tmp_path / "absent")) is None
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_has_bf16(str(tmp_path / "empty")) is None
