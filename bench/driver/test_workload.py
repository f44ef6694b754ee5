"""Checks of the driver's workload and model: python -m unittest discover -s bench/driver"""

import json
import unittest

import workload as wl


def make(codes, keys):
    w = wl.Workload(seed=0, keys=len(set(keys)), key_bytes=[b"alice", b"bob"])
    w.codes.extend(codes)
    w.key_index.extend(keys)
    return w


HELLO, JSON_HELLO, HOWDY, ANGRY, HAPPY, RESET = 0, 1, 2, 5, 6, 7


class ModelTest(unittest.TestCase):
    def test_the_seed_conversation(self):
        codes = [HELLO, JSON_HELLO, HOWDY, ANGRY, HELLO, HAPPY, HELLO, RESET, HELLO]
        s = wl.model(make(codes, [0] * len(codes)))["alice"]
        self.assertEqual((s.count, s.total, s.angry, s.revision, s.outcome), (1, 4, False, 9, "counted"))

    def test_poison_changes_nothing(self):
        codes = [HELLO, wl.POISON_BASE + 1, ANGRY, wl.POISON_BASE + 6, HELLO]
        s = wl.model(make(codes, [1] * len(codes)))["bob"]
        self.assertEqual((s.count, s.total, s.angry, s.revision, s.outcome), (1, 1, True, 3, "refused"))

    def test_compare_reports_differences(self):
        w = make([HELLO, HELLO], [0, 0])
        expected = wl.model(w)
        good = {b"alice": json.dumps({"key": "alice", "helloCount": 2, "helloTotalCount": 2, "mood": "HAPPY",
                                      "revision": 2, "outcome": "counted"}).encode()}
        self.assertEqual(wl.compare(expected, good), [])
        bad = {b"alice": good[b"alice"].replace(b'"helloCount": 2', b'"helloCount": 3')}
        self.assertIn("helloCount is 3, expected 2", wl.compare(expected, bad)[0])
        self.assertIn("no output record", wl.compare(expected, {})[0])


class WorkloadTest(unittest.TestCase):
    def test_deterministic_mix(self):
        a, b = wl.generate(20_000, 1_000, seed=7), wl.generate(20_000, 1_000, seed=7)
        self.assertEqual(a.codes, b.codes)
        self.assertEqual(a.key_index, b.key_index)
        self.assertNotEqual(wl.generate(20_000, 1_000, seed=8).key_index, a.key_index)
        hellos = sum(1 for c in a.codes if c in (HELLO, JSON_HELLO)) / len(a)
        self.assertAlmostEqual(hellos, 0.80, delta=0.02)
        self.assertEqual(len(a) - a.valid_in(0, len(a)), 20)  # one poison event in 1000

    def test_every_poison_kind_is_sent(self):
        w = wl.generate(len(wl.POISON) * wl.POISON_EVERY, 10)
        records = [w.record(i) for i in range(len(w)) if w.codes[i] >= wl.POISON_BASE]
        self.assertEqual(len(records), len(wl.POISON))
        self.assertIn(None, [k for k, _ in records])
        self.assertIn(b"", [v for _, v in records])
        self.assertTrue(any(k is not None and len(k) > 255 for k, _ in records))


if __name__ == "__main__":
    unittest.main()
