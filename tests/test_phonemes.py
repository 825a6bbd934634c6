"""Phone -> mouth targets and the coarticulated track (export.phonemes)."""

import shutil

import numpy as np
import pytest

from export.phonemes import (CMU, Segments, effective_open, is_bilabial, is_open_vowel, is_silence,
                             phone_shape, resolve, step_track, target_track, unknown_phones)

CMU_SET = ("aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th "
           "uh uw v w y z zh pau h# sil ax").split()


def test_every_cmu_phone_is_mapped():
    assert unknown_phones(CMU_SET, "cmu") == set()
    assert all(p in CMU for p in CMU_SET)


def test_silence_is_closed_at_rest_and_bilabials_press():
    for p in ("pau", "h#", "sil"):
        assert phone_shape(p) == ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        assert is_silence(p)
    for p in ("p", "b", "m"):
        first, second = phone_shape(p)
        assert first[2] == 1.0 and second[2] == 1.0 and first[0] == 0.0
        assert is_bilabial(p)
    assert not is_bilabial("f") and not is_bilabial("aa")


def test_vowel_ordering_and_lip_shape():
    op = {p: phone_shape(p)[0][0] for p in ("aa", "ae", "eh", "ih", "iy")}
    assert op["aa"] > op["ae"] > op["eh"] > op["ih"] > op["iy"]
    assert phone_shape("iy")[0][1] > 0.5  # spread
    assert phone_shape("uw")[0][1] < -0.5 and phone_shape("w")[0][1] < -0.5  # rounded


def test_diphthongs_move():
    first, second = phone_shape("ay")
    assert first[0] > second[0] and second[1] > first[1]
    first, second = phone_shape("ow")
    assert second[1] < first[1]


@pytest.mark.parametrize("phone,phoneset,expected", [
    ("a1", "catalan", "a"), ("O1", "catalan", "open_o"), ("i:", "czech", "i"), ("a:", "finnish", "a"),
    ("y", "finnish", "front_round"), ("tt", "russian", "alveolar"), ("pp", "russian", "bilabial"),
    ("y", "russian", "high_central"), ("tS", "italian", "postalveolar"), ("#", "czech", "rest"),
    ("y", "cmu", "palatal_glide"),
])
def test_sampa_rules_and_overrides(phone, phoneset, expected):
    assert resolve(phone, phoneset) == expected


def test_ipa_phones_of_the_piper_voice():
    """espeak-ng IPA (export.piper_corpus): the same visemes as the CMU set's counterparts."""
    pairs = {"ɑ": "aa", "æ": "ae", "ʌ": "ah", "ɔ": "ao", "ɛ": "eh", "ɪ": "ih", "i": "iy", "ʊ": "uh",
             "u": "uw", "ə": "ax", "ɚ": "er", "b": "b", "m": "m", "ð": "dh", "ʃ": "sh", "ŋ": "ng", "ɹ": "r",
             "w": "w", "j": "y", "pau": "pau"}
    for ipa, cmu in pairs.items():
        assert phone_shape(ipa, "ipa") == phone_shape(cmu, "cmu"), ipa
    assert is_open_vowel("ɑ", "ipa") and is_open_vowel("æ", "ipa") and not is_open_vowel("i", "ipa")
    assert is_bilabial("p", "ipa") and is_silence("pau", "ipa")
    assert unknown_phones(["ɑ", "ɾ", "ʔ", "ᵻ", "q"], "ipa") == {"q"}


def test_unknown_phone_falls_back_and_is_reported():
    assert resolve("qq7x", "czech") == "alveolar"
    assert unknown_phones(["qq7x", "a"], "czech") == {"qq7x"}


def test_open_vowel_class():
    assert all(is_open_vowel(p) for p in ("aa", "ae", "ah", "ao", "aw", "ay", "eh"))
    assert not any(is_open_vowel(p) for p in ("iy", "uw", "m", "pau"))
    assert is_open_vowel("a1", "catalan") and not is_open_vowel("i", "czech")


def _seg():
    # pau, a 60 ms /p/, a vowel, an /m/, pau
    return Segments.from_ends([0.2, 0.26, 0.45, 0.52, 0.8], ["pau", "p", "aa", "m", "pau"])


def test_step_track_reads_segments_and_rest_outside():
    t = np.array([0.1, 0.23, 0.3, 0.48, 0.7, 2.0, -1.0])
    st = step_track(_seg(), t)
    assert np.allclose(st[0], 0) and st[1, 2] == 1 and st[2, 0] == pytest.approx(0.9)
    assert st[3, 2] == 1 and np.allclose(st[4:], 0)


def test_target_track_keeps_short_closures_and_anticipates():
    seg = _seg()
    t = np.arange(0, 0.8, 0.0025)
    tr = target_track(seg, t)
    in_p = (t > 0.2) & (t < 0.26)
    assert tr[in_p, 2].max() > 0.95  # a 60 ms /p/ still reaches a full press
    assert effective_open(tr[in_p]).min() < 0.02
    # the mouth starts opening for /aa/ before its acoustic onset (anticipation) ...
    assert effective_open(tr[(t > 0.24) & (t < 0.26)]).max() > 0.02 or tr[(t > 0.23) & (t < 0.26), 0].max() > 0.05
    # ... reaches the vowel's opening in the middle, and is back to rest in long silences
    assert effective_open(tr[(t > 0.33) & (t < 0.40)]).min() > 0.85
    assert np.allclose(tr[(t < 0.12) | (t > 0.65)], 0, atol=1e-6)
    assert tr.shape == (t.size, 3) and tr.dtype == np.float32
    assert tr[:, 0].min() >= 0 and tr[:, 0].max() <= 1 and np.abs(tr[:, 1]).max() <= 1


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
def test_flite_alignment_has_no_offset():
    from export.speech_corpus import VOICES, alignment_report, synth_flite
    import tempfile
    from pathlib import Path

    voice = next(v for v in VOICES if v.name == "flite_kal16")
    with tempfile.TemporaryDirectory() as d:
        wav, seg = synth_flite(voice, "Bob paid for the map, and then, people stopped", Path(d))
    rep = alignment_report(wav, seg)
    assert abs(rep["best_lag_ms"]) <= 10
    assert rep["silence_db"] < rep["closure_db"] - 10 and rep["closure_db"] < rep["vowel_db"] - 5


def test_jaw_coupling_keeps_tongue_consonants_between_open_vowels_parted():
    seg = Segments.from_ends([0.2, 0.4, 0.47, 0.7, 0.77, 1.0, 1.2],
                             ["pau", "aa", "t", "aa", "p", "aa", "pau"])
    t = np.array([0.435, 0.735, 0.1])  # mid /t/, mid /p/, the pause
    plain = step_track(seg, t)
    coupled = step_track(seg, t, jaw_coupling=0.5)
    assert plain[0, 0] == pytest.approx(0.22) and coupled[0, 0] == pytest.approx(0.45)
    assert coupled[1, 2] == 1.0 and coupled[1, 0] == 0.0  # the lips still press for /p/
    assert coupled[2].tolist() == [0.0, 0.0, 0.0]  # pauses stay shut
    # next to a pause a consonant has one vowel neighbour; never less open than its own shape
    seg2 = Segments.from_ends([0.2, 0.3, 0.5, 0.7], ["pau", "s", "iy", "pau"])
    assert step_track(seg2, [0.25], jaw_coupling=0.5)[0, 0] == pytest.approx(phone_shape("s")[0][0])
