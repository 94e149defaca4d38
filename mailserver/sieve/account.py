"""
The ManageSieve avatar (L{ISieveScripts}, here in the Sieve library so the
protocol package sees only the interface): a user's scripts (L{mailserver.sieve.scripts.UserScripts})
with the checks and quotas of Pigeonhole (C{sieve_max_script_size},
C{sieve_quota_max_scripts}, C{sieve_quota_max_storage}).  Blocking: the
protocol calls it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from zope.interface import implementer

from mailserver.interfaces import ISieveScripts
from mailserver.sieve.checker import compile_script
from mailserver.sieve.parser import SieveError
from mailserver.sieve.scripts import ScriptNameError, UserScripts, check_name


class ScriptRefused(Exception):
    """A refused command: C{code} is the RFC 5804 response code (or None), C{text} the reason."""

    def __init__(self, code: str | None, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class Quotas:
    max_script_size: int = 1 << 20
    max_scripts: int = 100  # 0: no limit
    max_storage: int = 10 << 20  # 0: no limit


@implementer(ISieveScripts)
class SieveAccount:
    def __init__(self, user: str, home: str, quotas: Quotas = Quotas()) -> None:
        self.user = user
        self.scripts = UserScripts(home)
        self.quotas = quotas

    def logout(self) -> None:
        pass

    def _name(self, name: str) -> str:
        try:
            return check_name(name)
        except ScriptNameError:
            raise ScriptRefused(None, "Invalid script name") from None

    def list(self) -> list[tuple[str, bool]]:
        active = self.scripts.active_name()
        return [(name, name == active) for name in self.scripts.names()]

    def get(self, name: str) -> bytes:
        data = self.scripts.read(self._name(name))
        if data is None:
            raise ScriptRefused("NONEXISTENT", "There is no script by that name")
        return data

    def check(self, data: bytes) -> None:
        if len(data) > self.quotas.max_script_size:
            raise ScriptRefused("QUOTA/MAXSIZE", f"Script is larger than {self.quotas.max_script_size} bytes")
        try:
            compile_script(data)
        except SieveError as error:
            raise ScriptRefused(None, str(error)) from None

    def have_space(self, name: str, size: int) -> None:
        name = self._name(name)
        quotas = self.quotas
        if size > quotas.max_script_size:
            raise ScriptRefused("QUOTA/MAXSIZE", f"Script is larger than {quotas.max_script_size} bytes")
        sizes = self.scripts.sizes()
        if name not in sizes and quotas.max_scripts and len(sizes) >= quotas.max_scripts:
            raise ScriptRefused("QUOTA/MAXSCRIPTS", f"At most {quotas.max_scripts} scripts")
        used = sum(size_ for other, size_ in sizes.items() if other != name)
        if quotas.max_storage and used + size > quotas.max_storage:
            raise ScriptRefused("QUOTA/MAXSIZE", f"Scripts would take more than {quotas.max_storage} bytes")

    def put(self, name: str, data: bytes) -> None:
        self.have_space(name, len(data))
        self.check(data)
        self.scripts.write(self._name(name), data)

    def set_active(self, name: str | None) -> None:
        if not name:
            self.scripts.set_active(None)
            return
        if self.scripts.read(self._name(name)) is None:
            raise ScriptRefused("NONEXISTENT", "There is no script by that name")
        self.scripts.set_active(name)

    def delete(self, name: str) -> None:
        name = self._name(name)
        if self.scripts.active_name() == name:
            raise ScriptRefused("ACTIVE", "You may not delete an active script")
        try:
            self.scripts.delete(name)
        except FileNotFoundError:
            raise ScriptRefused("NONEXISTENT", "There is no script by that name") from None

    def rename(self, old: str, new: str) -> None:
        old, new = self._name(old), self._name(new)
        names = self.scripts.names()
        if old not in names:
            raise ScriptRefused("NONEXISTENT", "There is no script by that name")
        if new in names:
            raise ScriptRefused("ALREADYEXISTS", "A script with that name already exists")
        self.scripts.rename(old, new)


def sieve_account_factory(home_of: Callable[[str], str], quotas: Quotas) -> Callable[[str], SieveAccount]:
    """The realm's factory for L{ISieveScripts}: C{home_of(user)} is where the scripts live."""
    return lambda user: SieveAccount(user, home_of(user), quotas)
