"""Tests for mailserver.auth.schemes: every scheme, SHA-crypt vectors, crypt(3) agreement."""

from __future__ import annotations

import secrets
import warnings

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailserver.auth import schemes
from mailserver.auth.schemes import HashParameters, hash_password, sha_crypt, verify
from mailserver.tables.passwd import split_password

#: Cheap costs so the tests stay fast; production uses DEFAULT_PARAMETERS.
FAST = HashParameters(argon2_time_cost=1, argon2_memory_cost=64, argon2_parallelism=1, bcrypt_rounds=4, sha_crypt_rounds=1000)

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt  # deprecated since 3.11, gone in 3.13
except ImportError:
    _crypt = None

# Ulrich Drepper's published test vectors (SHA-crypt.txt): (setting, key, result).
SHA512_VECTORS = [
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=77777$short", "we have a short salt string but not a short password",
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"),
    ("$6$rounds=123456$asaltof16chars..", "a short string",
     "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
]
SHA256_VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("$5$rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("$5$rounds=5000$toolongsaltstring", "This is just a test",
     "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"),
    ("$5$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"),
    ("$5$rounds=77777$short", "we have a short salt string but not a short password",
     "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"),
    ("$5$rounds=123456$asaltof16chars..", "a short string",
     "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"),
    ("$5$rounds=10$roundstoolow", "the minimum number is still observed",
     "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
]


class ShaCryptTests(SynchronousTestCase):
    def test_sha512_vectors(self) -> None:
        for setting, key, result in SHA512_VECTORS:
            self.assertEqual(sha_crypt(key.encode(), setting.encode()).decode(), result)
            self.assertTrue(verify("SHA512-CRYPT", result, key.encode()))
            self.assertFalse(verify("SHA512-CRYPT", result, key.encode() + b"x"))

    def test_sha256_vectors(self) -> None:
        for setting, key, result in SHA256_VECTORS:
            self.assertEqual(sha_crypt(key.encode(), setting.encode()).decode(), result)
            self.assertTrue(verify("SHA256-CRYPT", result, key.encode()))

    def test_whole_hash_as_setting(self) -> None:
        setting, key, result = SHA512_VECTORS[3]
        self.assertEqual(sha_crypt(key.encode(), result.encode()).decode(), result)

    def test_not_a_sha_crypt_setting(self) -> None:
        with self.assertRaises(ValueError):
            sha_crypt(b"x", b"$1$salt")

    def test_agrees_with_crypt_module(self) -> None:
        if _crypt is None:
            raise self.skipTest("the crypt module is not available")
        passwords = [b"", b"a", b"p\xc3\xa4ssw\xc3\xb6rd", b"x" * 63, b"y" * 64, b"z" * 65, b"w" * 200]
        passwords += [secrets.token_bytes(n).hex().encode() for n in (5, 17, 40)]
        settings = ["$6$", "$6$rounds=1001$", "$5$", "$5$rounds=1999$", "$6$rounds=5000$"]
        for password in passwords:
            for prefix in settings:
                salt = secrets.token_hex(secrets.choice([1, 4, 8]))
                setting = prefix + salt
                expected = _crypt.crypt(password.decode("utf-8"), setting)
                self.assertEqual(sha_crypt(password, setting.encode()).decode(), expected, (password, setting))

    def test_new_hashes_verify_with_crypt_module(self) -> None:
        if _crypt is None:
            raise self.skipTest("the crypt module is not available")
        for scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
            for rounds in (5000, 1000):
                field = hash_password(scheme, b"s3cret", HashParameters(sha_crypt_rounds=rounds))
                hashed = split_password(field)[1]
                self.assertEqual(_crypt.crypt("s3cret", hashed), hashed)
                self.assertEqual("rounds=" in hashed, rounds != 5000)


class SchemeTests(SynchronousTestCase):
    def roundtrip(self, scheme: str) -> str:
        password = "pässword-" + secrets.token_hex(4)
        field = hash_password(scheme, password.encode(), FAST)
        self.assertTrue(field.startswith("{%s}" % scheme), field)
        parsed_scheme, stored = split_password(field)
        self.assertEqual(parsed_scheme, scheme)
        self.assertTrue(verify(scheme, stored, password.encode()))
        self.assertFalse(verify(scheme, stored, password.encode() + b"!"))
        self.assertFalse(verify(scheme, stored, b""))
        return stored

    def test_argon2id(self) -> None:
        stored = self.roundtrip("ARGON2ID")
        self.assertTrue(stored.startswith("$argon2id$v=19$m=64,t=1,p=1$"), stored)

    def test_argon2id_default_parameters_suit_dovecot(self) -> None:
        self.assertEqual(schemes.DEFAULT_SCHEME, "ARGON2ID")
        p = schemes.DEFAULT_PARAMETERS
        self.assertEqual((p.argon2_time_cost, p.argon2_memory_cost, p.argon2_parallelism), (3, 65536, 1))

    def test_argon2id_refuses_argon2i_hash(self) -> None:
        from argon2 import PasswordHasher, Type

        argon2i = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.I).hash(b"pw")
        self.assertFalse(verify("ARGON2ID", argon2i, b"pw"))
        self.assertTrue(verify("ARGON2I", argon2i, b"pw"))
        self.assertTrue(verify("CRYPT", argon2i, b"pw"))

    def test_blf_crypt_writes_2y(self) -> None:
        stored = self.roundtrip("BLF-CRYPT")
        self.assertTrue(stored.startswith("$2y$04$"), stored)

    def test_blf_crypt_reads_2a_2b_2y(self) -> None:
        # crypt_blowfish's published vector, under each prefix.
        tail = "$04$abcdefghijklmnopqrstuu8J3SjO9LQpndv9O3HW/e0PB1xKk.PJu"
        for prefix in ("$2a", "$2b", "$2y"):
            self.assertTrue(verify("BLF-CRYPT", prefix + tail, b"Aa@\xaa 0123456789"), prefix)
            self.assertFalse(verify("BLF-CRYPT", prefix + tail, b"Aa@\xaa 012345678"), prefix)

    def test_blf_crypt_long_passwords(self) -> None:
        stored = split_password(hash_password("BLF-CRYPT", b"a" * 72, FAST))[1]
        # Like crypt_blowfish, only the first 72 bytes count when verifying.
        self.assertTrue(verify("BLF-CRYPT", stored, b"a" * 72 + b"ignored"))
        with self.assertRaises(ValueError):
            hash_password("BLF-CRYPT", b"a" * 73, FAST)

    def test_sha512_crypt(self) -> None:
        stored = self.roundtrip("SHA512-CRYPT")
        self.assertTrue(stored.startswith("$6$rounds=1000$"), stored)

    def test_sha256_crypt(self) -> None:
        self.roundtrip("SHA256-CRYPT")

    def test_plain(self) -> None:
        self.roundtrip("PLAIN")
        self.assertTrue(verify("CLEARTEXT", "x", b"x"))
        with self.assertRaises(ValueError):
            hash_password("PLAIN", b"a:b")
        with self.assertRaises(ValueError):
            hash_password("PLAIN", b"\xff")

    def test_crypt_maps_by_prefix(self) -> None:
        for scheme in ("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT"):
            stored = split_password(hash_password(scheme, b"pw", FAST))[1]
            self.assertTrue(verify("CRYPT", stored, b"pw"), scheme)
            self.assertFalse(verify("crypt", stored, b"pX"), scheme)

    def test_scheme_name_is_case_insensitive(self) -> None:
        stored = split_password(hash_password("sha512-crypt", b"pw", FAST))[1]
        self.assertTrue(verify("sha512-crypt", stored, b"pw"))

    def test_unknown_scheme_is_false_and_logged(self) -> None:
        with capturedLogs() as events:
            self.assertFalse(verify("MD5", "whatever", b"whatever"))
            self.assertFalse(verify("CRYPT", "$1$salt$UsdFqFVB.FsuinRDK5eE..", b""))
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0]["log_level"], LogLevel.error)
        self.assertEqual(events[0]["scheme"], "MD5")

    def test_hash_that_does_not_fit_scheme_is_false(self) -> None:
        sha = split_password(hash_password("SHA512-CRYPT", b"pw", FAST))[1]
        for scheme in ("ARGON2ID", "BLF-CRYPT", "SHA256-CRYPT"):
            self.assertFalse(verify(scheme, sha, b"pw"), scheme)
        self.assertFalse(verify("SHA512-CRYPT", "$6$only", b"pw"))
        self.assertFalse(verify("ARGON2ID", "$argon2id$garbage", b"pw"))
        self.assertFalse(verify("BLF-CRYPT", "$2y$garbage", b"pw"))

    def test_unknown_scheme_cannot_be_hashed(self) -> None:
        with self.assertRaises(ValueError):
            hash_password("MD5-CRYPT", b"pw")

    def test_default_parameters_are_used(self) -> None:
        self.patch(schemes, "DEFAULT_PARAMETERS", FAST)
        self.assertIn("$m=64,t=1,p=1$", hash_password("ARGON2ID", b"pw"))

    def test_comparisons_are_constant_time(self) -> None:
        calls = []
        real = schemes.hmac.compare_digest

        def spy(a, b):
            calls.append((a, b))
            return real(a, b)

        self.patch(schemes.hmac, "compare_digest", spy)
        self.assertTrue(verify("PLAIN", "pw", b"pw"))
        self.assertTrue(verify("SHA512-CRYPT", SHA512_VECTORS[0][2], b"Hello world!"))
        self.assertEqual(len(calls), 2)
