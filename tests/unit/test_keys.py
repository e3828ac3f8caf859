import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from anklume import paths
from anklume.signing import keys


def test_generate_creates_both_pairs_with_safe_modes(tmp_path):
    ks = keys.generate(tmp_path / "k")
    assert ks.complete()
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    for role in keys.ROLES:
        assert stat.S_IMODE(ks.key(role).stat().st_mode) == 0o600
        key = load_pem_private_key(ks.key(role).read_bytes(), None)
        cert = x509.load_pem_x509_certificate(ks.cert(role).read_bytes())
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        # The certificate is self-signed and belongs to its key.
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        cert.public_key().verify(
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
        assert cert.issuer == cert.subject


def test_generate_refuses_to_overwrite_without_force(tmp_path):
    ks = keys.generate(tmp_path)
    before = ks.db_key.read_bytes()
    with pytest.raises(keys.KeysExistError):
        keys.generate(tmp_path)
    assert ks.db_key.read_bytes() == before
    keys.generate(tmp_path, force=True)
    assert ks.db_key.read_bytes() != before


def test_generate_refuses_when_any_single_file_exists(tmp_path):
    (tmp_path / "verity.crt").write_text("x")
    with pytest.raises(keys.KeysExistError):
        keys.generate(tmp_path)


def test_ensure_generates_once(tmp_path):
    ks, created = keys.ensure(tmp_path / "k")
    assert created
    ks2, created2 = keys.ensure(tmp_path / "k")
    assert not created2 and ks2 == ks


def test_ensure_rejects_incomplete_set(tmp_path):
    ks = keys.generate(tmp_path)
    ks.verity_key.unlink()
    with pytest.raises(keys.PermanentError):
        keys.ensure(tmp_path)


def test_default_key_dir_is_outside_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("ANKLUME_KEY_DIR", raising=False)
    assert paths.key_dir() == paths.DEFAULT_KEY_DIR
    monkeypatch.setenv("ANKLUME_KEY_DIR", str(tmp_path))
    assert paths.key_dir() == tmp_path


def test_cli_keys_generate(tmp_path):
    from typer.testing import CliRunner

    from anklume.cli import app

    r = CliRunner().invoke(app, ["keys", "generate", "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "db.crt").is_file()
    r = CliRunner().invoke(app, ["keys", "generate", "--dir", str(tmp_path)])
    assert r.exit_code != 0
