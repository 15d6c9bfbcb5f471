from nose.provenance import cpu


def test_cpu_names_the_model_and_the_widest_vector_extension(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    assert cpu(info) == "AMD EPYC 9B45, AVX2"  # the first processor's flags
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu(info) == "Some CPU, AVX-512"
    info.write_text("Features\t: fp asimd evtstrm\n")  # aarch64 names no model in cpuinfo
    assert cpu(info).endswith(", NEON")
    assert cpu(tmp_path / "absent")  # no cpuinfo: the platform's name


def test_device_name_of_a_cpu_names_its_processor_and_threads():
    import torch

    from nose.provenance import device_name

    assert device_name("cpu") == f"cpu ({cpu()}, {torch.get_num_threads()} threads)"
