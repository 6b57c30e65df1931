import pytest

from ortgate import isa

INTEL_AVX2 = "vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-8700\nflags\t\t: fpu sse avx2 fma\n"
EPYC_VNNI = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512bw avx512vl avx512_vnni\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm sve\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"


def fp(text, arch="x86_64"):
    return {"arch": arch, **isa._from_proc(text)}


def test_proc_cpuinfo_parsing_keeps_int8_flags_only():
    assert fp(INTEL_AVX2) == {"arch": "x86_64", "vendor": "GenuineIntel", "model_name": "Intel(R) Core(TM) i7-8700",
                              "flags": ["avx2"]}
    assert fp(GRAVITON, "aarch64")["flags"] == ["asimddp", "i8mm", "sve"]


@pytest.mark.parametrize(
    "text, arch, preset",
    [
        (INTEL_AVX2, "x86_64", "avx2"),
        (EPYC_VNNI, "x86_64", "avx512_vnni"),
        ("flags\t: avx2 avx512f avx512bw avx512vl\n", "x86_64", "avx512"),
        (GRAVITON, "aarch64", "arm64"),
        ("flags\t: sse2\n", "x86_64", "arm64"),
    ],
)
def test_suggested_preset_follows_the_flags(text, arch, preset):
    suggested, reason = isa.suggest_preset(fp(text, arch))
    assert suggested == preset and reason


def test_fingerprint_id_names_the_hardware_not_the_core_count():
    a = {**fp(EPYC_VNNI), "logical_cores": 2, "source": "/proc/cpuinfo"}
    b = {**fp(EPYC_VNNI), "logical_cores": 64, "source": "py-cpuinfo"}
    assert isa.fingerprint_id(a) == isa.fingerprint_id(b)
    assert isa.fingerprint_id(a) != isa.fingerprint_id(fp(INTEL_AVX2))


def test_fallback_without_proc_cpuinfo(monkeypatch):
    import cpuinfo

    monkeypatch.setattr(isa, "Path", lambda p: type("Missing", (), {"is_file": lambda self: False})())
    monkeypatch.setattr(cpuinfo, "get_cpu_info", lambda: {"brand_raw": "Apple M2", "vendor_id_raw": "Apple",
                                                          "flags": ["asimddp", "i8mm"]})
    isa.cpu_fingerprint.cache_clear()
    try:
        got = isa.cpu_fingerprint()
    finally:
        isa.cpu_fingerprint.cache_clear()
    assert got["model_name"] == "Apple M2" and got["source"] == "py-cpuinfo" and got["flags"] == ["asimddp", "i8mm"]


@pytest.mark.parametrize(("files", "affinity", "expected"), [
    ({}, 8, 8),  # no cgroup limit: the affinity mask
    ({"cpu.max": "max 100000\n"}, 8, 8),  # v2, unlimited
    ({"cpu.max": "200000 100000\n"}, 64, 2),  # v2: a 2-vCPU container on a 64-core host
    ({"cpu.max": "150000 100000\n"}, 64, 2),  # 1.5 cores of quota: 2 threads
    ({"cpu.max": "400000 100000\n"}, 3, 3),  # the affinity mask is smaller than the quota
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 16, 1),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 16, 16),  # v1, unlimited
    ({"cpu.max": "garbage\n"}, 4, 4),  # unreadable: no limit assumed
])
def test_usable_cores_honour_affinity_and_cgroup_quota(tmp_path, files, affinity, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert isa.usable_cores(tmp_path, affinity=affinity) == expected


def test_threads_default_to_the_usable_cores_and_the_machine_records_them(monkeypatch):
    from ortgate.spec.options import OPTIONS_BY_NAME, parse_option

    monkeypatch.setattr("ortgate.spec.parsers.usable_cores", lambda: 3)
    assert parse_option(OPTIONS_BY_NAME["threads"], None) == 3 and parse_option(OPTIONS_BY_NAME["threads"], "5") == 5
    fp = isa.machine_fingerprint()
    assert fp["usable_cores"] >= 1 and "usable_cores" not in isa.cpu_fingerprint()  # not part of the machine id
