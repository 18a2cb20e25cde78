"""The entropy coder: lossless for any int32 input, deterministic, and actually compressing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaecodec.entropy import (ALPHABET, BLOCK, CONTEXTS, K, TABLE_TOTAL, EntropyCoder, counts_to_table,
                              latent_histograms)
from vaecodec.errors import FormatError, UsageError

C = 16
STEPS = np.array([1.0, 0.5, 0.25], np.float32)


@pytest.fixture(scope="module")
def coder() -> EntropyCoder:
    """Tables fitted to a random-walk latent source (temporally correlated, Laplacian)."""
    rng = np.random.default_rng(1)
    means = rng.laplace(0, 1.5, (6, C, 5, 8, 8))
    means[:, :, 1:] = means[:, :, :1] + rng.laplace(0, 0.2, (6, C, 4, 8, 8))  # mostly static
    intra, inter = latent_histograms(means, STEPS)
    return EntropyCoder.from_histograms(STEPS, intra, inter, (1, 2, 3), default_quality=2)


def _smooth_means(rng, n: int, t: int, size: int) -> np.ndarray:
    """Latent-like means [n, C, t, size, size] whose strength changes in patches of 8 x 8 cells,
    finer than a block: quiet and busy patches mixed inside every block, the same in every
    channel and frame (static content), plus a little noise."""
    scale = np.kron(rng.choice([0.0, 0.5, 4.0], (n, 1, 1, size // 8, size // 8)), np.ones((8, 8)))
    return rng.laplace(0, 1.0, (n, C, 1, size, size)) * scale + rng.normal(0, 0.1, (n, C, t, size, size))


@pytest.fixture(scope="module")
def smooth_coder() -> EntropyCoder:
    """Table banks fitted to the smooth source (chunk version 3)."""
    means = _smooth_means(np.random.default_rng(7), 8, 3, 32)
    return EntropyCoder.from_histograms(STEPS, *latent_histograms(means, STEPS), (1, 2, 3), default_quality=2)


@pytest.fixture(scope="module")
def ctx_coder(smooth_coder) -> EntropyCoder:
    """The same banks plus context tables fitted to the same clips (chunk version 5)."""
    means = _smooth_means(np.random.default_rng(7), 8, 3, 32)
    return smooth_coder.with_context(smooth_coder.context_histograms(means, [0.0, 0.0, 0.0]))


def _laplace_q(rng, shape, scale=2.0) -> np.ndarray:
    return np.round(rng.laplace(0, scale, shape)).astype(np.int32)


@pytest.mark.parametrize("shape", [(C, 1, 4, 5), (C, 3, 7, 9), (C, 9, 2, 33), (C, 2, 0, 4), (C, 1, 1, 1)])
@pytest.mark.parametrize("which", ["coder", "ctx_coder"])
def test_roundtrip_shapes(request, which, shape):
    coder = request.getfixturevalue(which)
    q = _laplace_q(np.random.default_rng(0), shape)
    data = coder.encode(q, 2)
    assert data[0] == (5 if which == "ctx_coder" else 3)
    out = coder.decode(data, shape, 2)
    assert out.dtype == np.int32 and out.shape == shape
    np.testing.assert_array_equal(out, q)


@pytest.mark.parametrize("which", ["coder", "ctx_coder"])
def test_roundtrip_any_int32_values(request, which):
    """Values far outside the tables (and the int32 extremes) go through the escape list; in
    version 5 they also set their neighbours' contexts."""
    coder = request.getfixturevalue(which)
    rng = np.random.default_rng(2)
    q = _laplace_q(rng, (C, 4, 6, 6))
    q[0, 0, 0, 0] = np.iinfo(np.int32).max
    q[0, 1, 0, 0] = np.iinfo(np.int32).min  # residual to the previous frame overflows int32
    q[3, 2] = rng.integers(-(2**31), 2**31 - 1, (6, 6), dtype=np.int64).astype(np.int32)
    q[5, :, 1, 1] = [K, K + 1, -K, -K - 1]
    mv = np.zeros((4, 1, 1, 2), np.int16)
    mv[2:] = (3, -9)
    for quality in (1, 2, 3):
        for motion in (None, mv):
            np.testing.assert_array_equal(coder.decode(coder.encode(q, quality, motion), q.shape, quality), q)


def test_contexts_code_spatially_correlated_latents_in_fewer_bytes(smooth_coder, ctx_coder):
    """On fresh clips of the source both coders were fitted to, version 5 (a table per block
    and symbol context) is smaller than version 3 (a table per block) at every quality."""
    means = _smooth_means(np.random.default_rng(8), 2, 3, 48)
    sizes = []
    for quality in (1, 2, 3):
        q = np.round(means / STEPS[quality - 1]).astype(np.int32)
        for clip in q:
            v3, v5 = smooth_coder.encode(clip, quality), ctx_coder.encode(clip, quality)
            np.testing.assert_array_equal(ctx_coder.decode(v5, clip.shape, quality), clip)
            assert len(v5) < 0.995 * len(v3), (quality, len(v5), len(v3))
            sizes.append((len(v5), len(v3)))
    assert np.sum(sizes, 0)[0] < 0.975 * np.sum(sizes, 0)[1], sizes  # measured: 0.961


@pytest.mark.parametrize("which", ["coder", "ctx_coder"])
def test_deterministic_and_survives_serialisation(request, which):
    coder = request.getfixturevalue(which)
    q = _laplace_q(np.random.default_rng(3), (C, 3, 8, 8))
    a = coder.encode(q, 3)
    b = coder.encode(q.copy(), 3)
    again = EntropyCoder.from_tensors(coder.to_tensors())
    assert a == b == again.encode(q, 3)
    np.testing.assert_array_equal(again.decode(a, q.shape, 3), q)


def test_static_content_is_cheap(coder):
    """Repeating a latent frame costs far less than fresh frames (inter mode is used)."""
    rng = np.random.default_rng(4)
    frame = _laplace_q(rng, (C, 1, 16, 16))
    static = np.repeat(frame, 5, axis=1)
    fresh = _laplace_q(rng, (C, 5, 16, 16))
    assert len(coder.encode(static, 2)) < 0.5 * len(coder.encode(fresh, 2))


def test_rate_matches_table_entropy():
    """With one table per mode the range coder spends within 1% of the ideal code length,
    plus the block choices (4 bits each) and a few words."""
    rng = np.random.default_rng(5)
    means = rng.laplace(0, 1.5, (6, C, 5, 8, 8))
    one = EntropyCoder.from_histograms(STEPS, *latent_histograms(means, STEPS, tables=1), (1, 2, 3), 2)
    probs = one._intra[1, 0, 0].astype(np.float64) / TABLE_TOTAL
    sym = rng.choice(ALPHABET - 1, size=(1, 1, 64, 64), p=probs[:-1] / probs[:-1].sum())
    q = np.zeros((C, 1, 64, 64), np.int32)
    q[0] = sym - K
    ideal = -np.log2(one._intra[1, np.arange(C)[:, None, None, None], 0, q + K] / TABLE_TOTAL).sum()
    choice_bits = 4 * C * (64 // BLOCK) ** 2
    assert len(one.encode(q, 2)) * 8 < ideal * 1.01 + choice_bits + 32 * 4 + 8 * 8 + 16


def test_table_bank_fits_quiet_and_busy_regions():
    """Frames that are flat in one half and busy in the other: a bank of tables chosen per
    block costs clearly less than one table per mode fitted to the same data."""
    rng = np.random.default_rng(7)
    means = np.zeros((8, C, 5, 32, 32))
    means[..., 16:] = rng.laplace(0, 4.0, (8, C, 5, 32, 16))  # busy right half, every frame new
    means[..., :16] += rng.laplace(0, 0.3, (8, C, 5, 32, 16))  # quiet left half
    q = np.round(means[0]).astype(np.int32)
    one = EntropyCoder.from_histograms(STEPS, *latent_histograms(means, STEPS, tables=1), (1, 2, 3), 1)
    bank = EntropyCoder.from_histograms(STEPS, *latent_histograms(means, STEPS, tables=8), (1, 2, 3), 1)
    assert (one.tables, bank.tables) == (1, 8)
    assert len(bank.encode(q, 1)) < 0.85 * len(one.encode(q, 1))
    np.testing.assert_array_equal(bank.decode(bank.encode(q, 1), q.shape, 1), q)


# A version 1 chunk (files of vaecodec-tiny-v1/v2), written by vaecodec at commit a08b8f1
# with the integer-only tables and symbols of _v1_case(): it must still decode exactly.
V1_CHUNK = bytes.fromhex(
    "015555555501000000e803000000000000ea46c60e306e8cc8834de5bd534661de0be270dc854a4dfde625f8"
    "a6feb577f1a07c1a44cc7f4bce9d724bc6c957428375d01649c99bf38cd2642dfea04fa5e77372a55e3d3631"
    "c2374eca7b1652682869a6ab4199a88054c214fb8ce6817ababb6404fb30bb7e57bd74482eeef071d8d6699f"
    "6918d7b6004c72142fc994a8b32eb0de1c8e6f7fd1fd4c067f6cacb6fd3f536cf181a7dc9228cdce1ac9baad"
    "add7871b6517c1ffd53e04eb5a0d2e928b844a2d85517fd5f36ba587d090642b991e50485b1ee94aace1c533"
    "85d1392dd619eb6ed7fdeef8f6d42c2f6a9492ed7c487cc25b6668a2e6643cbfb937be9a9cfa23785f034b99"
    "375c4e74bab6265eea0fec882ff31946de44257967bdb3959d3e3ce27eecd2fbae787c59f50d2f24b1d01259"
    "9a52b17e041401d6cdb6f46cd0476d3e69702752e62dfa3a34b8bfb34303d13a1891b9aaf12d8842ae9f8c7d"
    "bc23e31c4519d49642938863bc0c4bfe057fd14f9d8b4eee3f7742fa01f04b89ccba71b0e6fc318316d80720"
    "d29ad4236b6ffde53ca7a1234efa87853944762d2917d4d3ae0bd829ec1fb2f3e4fac2251dcd71b878"
)


def _v1_case() -> tuple[EntropyCoder, np.ndarray]:
    v = np.arange(ALPHABET) - K
    intra = np.tile(4096 // (1 + np.abs(v) ** 2), (1, C, 1))
    inter = np.tile(4096 // (1 + 4 * np.abs(v) ** 2), (1, C, 1))
    coder = EntropyCoder(np.ones((1, C), np.float32), counts_to_table(intra), counts_to_table(inter), (1,), 1)
    idx = np.arange(C * 3 * 5 * 7).reshape(C, 3, 5, 7)
    q = ((idx * 7919) % 11 - 5) * (idx % 3 == 0)
    q[:, 2] = q[:, 1]  # a repeated frame: coded inter
    q[3, 0, 0, 0] = 1000  # an escape
    return coder, q.astype(np.int32)


def test_version_1_chunks_still_decode():
    coder, q = _v1_case()
    assert coder.tables == 1
    np.testing.assert_array_equal(coder.decode(V1_CHUNK, q.shape, 1), q)
    assert coder.encode(q, 1)[0] == 3  # new chunks are version 3
    with pytest.raises(FormatError):
        coder.decode(V1_CHUNK[:5], q.shape, 1)


# A version 2 chunk (files written before version 3) from vaecodec at commit 70879ef, for
# _v2_case(): it must still decode exactly.
V2_CHUNK = bytes.fromhex(
    "02100001000120010001000120010100000078ecffffffffffffd25d4f250e6602d15015ba5bf31bb8d67f3c"
    "3a7ed9044f4fead108a3c5fd545187991500e25ebf7a1d37f8250a67ab0403aa3fe77940a5032ff02c5370cc"
    "b53704fb63bbb0ea965c350bdf94f599004dd60897c2b90dc1bf57763de883474a122f91dfeb68fbbd3f27f7"
    "d0c23f85cdb8fc921e28204dda4f06c5ef3b6e945f334af01495851794982030bba62b3b43a7b42e0d4d3adb"
    "90fc21734a295cd953114b5f9d44348f1a98f637364d91a1e37b5aa7ce323a30a8794fe19e3981c125119155"
    "ea904f5c8b49d2be96812f67e9479c6cbf2bd7a3c03b8efb4349635f81ecaed645e925d66f54b1f13178eb86"
    "ee15fa781fcf4580e53fa45d3e7dee3c03f5885a1c04c41478c6585591ff689a0e465536ca3607a178e3a663"
    "b4df210619245c3e20926502ae487c931c60cbd5dbf2cbeb98fbd797977ca08dcd35f4538d25649717a19ef1"
    "550dfa68133f03bd1a1cdf1a1cc7e7c0073c3dea7445430888ec747ed42a0fc3056f67928f2e3b983864"
)


def _v2_case() -> tuple[EntropyCoder, np.ndarray]:
    v = np.arange(ALPHABET) - K
    narrow, wide = 4096 // (1 + 4 * np.abs(v) ** 2), 4096 // (1 + np.abs(v))
    bank = counts_to_table(np.stack((narrow, wide))[None, None].repeat(2, axis=1))  # [1, 2 channels, 2, A]
    coder = EntropyCoder(np.ones((1, 2), np.float32), bank, bank, (1,), 1)
    idx = np.arange(2 * 3 * 20 * 20).reshape(2, 3, 20, 20)
    q = ((idx * 7919) % 3 - 1) * (idx % 5 == 0)  # quiet everywhere ...
    q[:, :, 16:, 16:] = (idx[:, :, 16:, 16:] * 104729) % 41 - 20  # ... but one busy block
    q[:, 2, :16] = q[:, 1, :16]  # repeated top half: inter
    q[1, 0, 3, 4] = -5000  # an escape
    return coder, q.astype(np.int32)


# The same case as version 3 (block choices range-coded, "zero" blocks), as written since the
# commit that introduced it: the format is frozen, so the encoder must keep producing these bytes.
V3_CHUNK = bytes.fromhex(
    "03100100000078ecffffffffffffdba100270fafc0ce808dcc0db98c49b27c43f8a41dbf361d0296924be464"
    "02f36346a5314e246988736f406db185ce895e3e878034540050f97a0bd5b1a0c7551b3348bb27f1836437dd"
    "7f8957ee34c1cccece680916e8fb04b3979bee31a29714cf2a9cc7d06ee1ce16d93d2e9275d4b4e30fcb0ef1"
    "29502f1a93300f924aa66aeb1f3dca26831015730f35100cccbc393c80a692f4ee2e8ecd9a8d691f039b524f"
    "37022a06a93d75044dab0d6d009faf8a98b854933f672c646d219cf7d024ca0513eb96941e5c26a0b496160f"
    "7b45367c97fc08e28c27b423d40512f32b364077e0abd4b3f893b774260e2ff001575d3ccf1ba85638f2c210"
    "4dd466938a9915224939396407b83fe6e40fe14663b4a14c949dbb70d0138ff4fb76299abc7c"
)


def test_version_2_and_3_chunks_are_byte_exact():
    coder, q = _v2_case()
    np.testing.assert_array_equal(coder.decode(V2_CHUNK, q.shape, 1), q)
    choices = np.frombuffer(V2_CHUNK, np.uint8, 14, 2)  # 2 x 3 frames x 4 blocks, two per byte
    assert len({*(choices >> 4), *(choices & 15)}) >= 3  # narrow, wide and inter tables all used
    assert coder.encode(q, 1) == V3_CHUNK
    np.testing.assert_array_equal(coder.decode(V3_CHUNK, q.shape, 1), q)


# The same case as version 4 (motion vectors in eighths, one-rounding bilinear prediction), as
# written since motion compensation came in: frozen like version 3.
V4_CHUNK = bytes.fromhex(
    "04100100000078ecffffffffffffdaa100276dfa1fce947d975b91295434d9e36e104753c7bd9c4145bb2f85"
    "401ca05c0b192e376d9a22061a35ea578d0fd492f6302042d9b2f7da528176e3edfa24da7a79acdb3470c15a"
    "11af8760887c1dd7917fd6f6ad763880597161f8a86fe908b27ac6ce02618f27406ad8c4e0314303fb06d571"
    "d512823c6b69c3d4339767dd412e938e9e425eb25f1f81aded6ee0913953fe6b3531e78981cda4f7ba2d6a79"
    "31e3a905e1f5d0f62953a8e3be58dd793c28e3981845941efa5047846029e726aff78bfc5407b291ff129b8e"
    "88761d63f06750104892b0a80c164e93d8ef1db3453511f6ddc5ab825be24ecce1a8bba920a56a5839bfce54"
    "dc3b18b6ee5e9ed8e5a4fe909e1cad25590771dd0ec9fa87e1e610d1f03e776aae0f209a2e391c08d33816f2"
    "67bc5fac1ffce7c51c4f8c041d1eebf54ff7"
)


def test_version_4_chunk_is_byte_exact():
    coder, q = _v2_case()
    assert _v4_chunk(coder, q) == V4_CHUNK
    np.testing.assert_array_equal(coder.decode(V4_CHUNK, q.shape, 1), q)


def _v5_case() -> tuple[EntropyCoder, np.ndarray, np.ndarray]:
    """The version 2 case with context tables (narrow for quiet contexts, wider for busy ones)
    and version 4's motion vectors."""
    coder, q = _v2_case()
    v = np.abs(np.arange(ALPHABET) - K)
    counts = np.stack([4096 // (1 + v ** 2 * 4 // (1 + n)) for n in range(CONTEXTS)])  # [CONTEXTS, A]
    context = counts_to_table(np.broadcast_to(counts, (1, 2, 4, CONTEXTS, ALPHABET))).astype(np.uint16)
    mv = np.zeros((3, 2, 2, 2), np.int16)
    mv[1, 0, 1] = (-3, 6)
    mv[2] = (1, -2)
    return EntropyCoder(np.ones((1, 2), np.float32), coder._intra, coder._inter, (1,), 1, context), q, mv


# The same case as version 5 (three passes, a table per choice and context): frozen.
V5_CHUNK = bytes.fromhex(
    "0510010100000078ecffffffffffff1e0a1026f020fb8a5b56750eaf05b84e0e6e0523c59115c98b484e9554"
    "e019ca638c0c6292420ecd8504c7bb7b1a148d4dc52fef6eef0d2af7033884c80eba79bcc112fdb2382576da"
    "1697f3b9dc3150a75b50c51b4e2a892d1c154902bf78f873003dbe45110896a47f7a46042370456efe7ac9e4"
    "1cb5af18cf06c48ec4bdf386757733871a8cf700c4c19ab52f7159ead9d3c338052a72214815f6d478ee2aa6"
    "ef24cdc0ccba631bb3bf7bbc81b65a5569f3ac8c300b3e4857142a8c6a4ef4038201ada6b2b797c0349828a8"
    "c379302b025574710e3f5505fb6ba3e6ab480e4a6f458e3809868ac015756e440e54eb4442711a53114a39e2"
    "c482dd1eee5150fa5443b24a5bbef3f8eb7cb81ee9b2d4c2db3f443c944c2e5350af3627608c042448afda8a"
    "be04611d5241ac49a9e072ab325beb689754e650ceffe2d91c0099428173556b4faaba9c18a531b73372f667"
    "d7e7784a42e775432a4b04bb43a970496de825e73ec958c8e82313156a4cc6f5bcd296f6fcb884157e02711b"
    "c10f856d7796602d5e2b38c0c9e9449c7847293a286360bb4e6446e017ec90fb3e9ecdae174e2a106e33563a"
    "dfb8f9a6f5d940ac3a9b96f6a1e48461b4d81a"
)


def test_version_5_chunk_is_byte_exact():
    coder, q, mv = _v5_case()
    data = coder.encode(q, 1, mv)
    assert data[:3] == b"\x05\x10\x01" and data == V5_CHUNK
    np.testing.assert_array_equal(coder.decode(V5_CHUNK, q.shape, 1), q)
    assert coder.encode(q, 1)[:3] == b"\x05\x10\x00"  # no motion vectors: flags 0


def test_static_blocks_cost_a_fraction_of_a_bit():
    """Version 3: a block that repeats the previous frame is a "zero" block (no symbols), and
    its choice is range-coded in the context of the previous frame's choice. So the 7 later
    frames of a static clip must cost under 1 bit per block in all (version 2 spent 4 bits
    per block on the choice alone, plus the symbols of an inter table)."""
    coder = EntropyCoder.from_histograms(STEPS, *latent_histograms(
        np.random.default_rng(2).laplace(0, 1.5, (2, C, 3, 16, 16)), STEPS), (1, 2, 3), 1)
    q = np.random.default_rng(3).laplace(0, 2, (C, 1, 64, 64)).round().astype(np.int32).repeat(8, axis=1)
    data = coder.encode(q, 1)
    np.testing.assert_array_equal(coder.decode(data, q.shape, 1), q)
    later = len(data) - len(coder.encode(q[:, :1], 1))  # bytes for frames 1..7
    blocks = C * 7 * (64 // BLOCK) ** 2  # 1792 blocks: 896 bytes as version 2's 4-bit choices
    assert later < blocks / 8, later


def test_tables_are_exact_integers():
    hist = np.zeros((2, 3, ALPHABET), np.int64)
    hist[0, 0, K] = 10**9  # one huge count must not starve the others
    hist[1, 2, :5] = 3
    t = counts_to_table(hist)
    assert t.dtype == np.int32 and (t >= 1).all() and (t.sum(-1) == TABLE_TOTAL).all()


def test_step_per_quality(coder):
    s = [coder.step(q) for q in coder.qualities]
    assert all(x.shape == (C,) for x in s)
    assert float(s[0][0]) == 1.0 and float(s[2][0]) == 0.25


def test_errors(coder):
    q = _laplace_q(np.random.default_rng(6), (C, 2, 4, 4))
    data = coder.encode(q, 2)
    with pytest.raises(UsageError):
        coder.encode(q, 9)
    with pytest.raises(UsageError):
        coder.encode(q.astype(np.float32), 2)
    with pytest.raises(UsageError):
        coder.encode(q[:4], 2)
    with pytest.raises(FormatError):
        coder.decode(data[:3], q.shape, 2)
    with pytest.raises(FormatError):
        coder.decode(b"\x07" + data[1:], q.shape, 2)
    with pytest.raises(FormatError):  # a choice naming table 15 of an 8-table bank... at frame 0
        coder.decode(data[:2] + b"\xff" + data[3:], q.shape, 2)
    with pytest.raises(FormatError):
        coder.decode(data[:1] + b"\x00" + data[2:], q.shape, 2)
    with pytest.raises(FormatError):
        EntropyCoder.from_tensors({"steps": coder.to_tensors()["steps"]})


def test_version_5_errors():
    coder, q, mv = _v5_case()
    plain, _ = _v2_case()
    with pytest.raises(FormatError, match="context tables"):  # a model without them
        plain.decode(V5_CHUNK, q.shape, 1)
    with pytest.raises(FormatError, match="flags"):
        coder.decode(V5_CHUNK[:2] + b"\x02" + V5_CHUNK[3:], q.shape, 1)
    with pytest.raises(FormatError, match="flags"):
        coder.decode(V5_CHUNK[:2], q.shape, 1)
    with pytest.raises(FormatError, match="blocks of 8"):
        coder.decode(V5_CHUNK[:1] + b"\x08" + V5_CHUNK[2:], q.shape, 1)
    tensors = coder.to_tensors()
    assert tensors["context"].dtype == torch.uint16
    np.testing.assert_array_equal(EntropyCoder.from_tensors(tensors).decode(V5_CHUNK, q.shape, 1), q)
    bad = tensors["context"].to(torch.int32)
    bad[0, 1, 2, 3, 4] += 1  # one table no longer sums to TABLE_TOTAL
    with pytest.raises(FormatError, match="sum"):
        EntropyCoder.from_tensors({**tensors, "context": bad})
    with pytest.raises(FormatError, match="shapes"):
        EntropyCoder.from_tensors({**tensors, "context": tensors["context"][:, :, :, :4]})


def _v4_chunk(coder: EntropyCoder, q: np.ndarray) -> bytes:
    """The version 2 case coded with motion vectors (frame 1 moves one block, frame 2 all)."""
    mv = np.zeros((3, 2, 2, 2), np.int16)
    mv[1, 0, 1] = (-3, 6)
    mv[2] = (1, -2)
    data = coder.encode(q, 1, mv)
    assert data[0] == 4
    np.testing.assert_array_equal(coder.decode(data, q.shape, 1), q)
    return data


@pytest.mark.parametrize("chunk", ["v2", "v3", "v4", "v5"])
def test_damaged_payloads_fail_as_format_errors(chunk):
    """Flipped bits that reach the coder (the container's CRC would catch them in a file)
    give a FormatError or some decoded values, never another exception."""
    coder, q = _v2_case()
    if chunk == "v5":
        coder = _v5_case()[0]
    good = {"v2": lambda: V2_CHUNK, "v3": lambda: coder.encode(q, 1), "v4": lambda: _v4_chunk(coder, q),
            "v5": lambda: V5_CHUNK}[chunk]()
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(300):
        bad = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(2, len(bad)))] ^= 1 << int(rng.integers(0, 8))
        try:
            out = coder.decode(bytes(bad), q.shape, 1)
            assert out.shape == q.shape and out.dtype == np.int32
            seen.add("decoded")
        except FormatError:
            seen.add("FormatError")
    assert "FormatError" in seen
