"""`deploy.sh install --root DIR` then `uninstall`: a venv of the edge extra without torch, the
model, the config, a hardened unit that `systemd-analyze verify` accepts, and a clean removal."""

import shutil
import subprocess

import pytest

from tests.helpers import REPO

UNIT = "etc/systemd/system/edge-inspect.service"


@pytest.mark.slow
def test_install_into_a_staging_root_then_uninstall(tmp_path, int8_ir):
    root = tmp_path / "root"
    inst = subprocess.run([str(REPO / "deploy.sh"), "install", "--root", str(root), "--model", str(int8_ir),
                           "--camera", "/dev/video2", "--serial", "/dev/ttyUSB1"],
                          capture_output=True, text=True, timeout=900)
    assert inst.returncode == 0, inst.stderr[-3000:]
    prefix = root / "opt/edge-inspect"
    assert (prefix / "model/tile.xml").is_file() and (prefix / "model/tile.bin").is_file()
    py = str(prefix / "venv/bin/python")
    mods = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in ('torch', 'timm', 'nncf') if u.find_spec(m)])"],
                          capture_output=True, text=True, check=True)
    assert mods.stdout.strip() == "[]"
    unit = (root / UNIT).read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "User=edge-inspect", "SupplementaryGroups=video dialout",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "ReadWritePaths=/var/log/edge-inspect /var/lib/edge-inspect/archive", "DeviceAllow=/dev/video2 rw",
                 "DeviceAllow=/dev/ttyUSB1 rw", "ExecStart=/opt/edge-inspect/venv/bin/edge-inspect --config /etc/edge-inspect/config.toml"):
        assert line in unit.splitlines(), line
    # the installed config validates with the installed runtime (paths mapped into the staging root)
    cfg = (root / "etc/edge-inspect/config.toml").read_text()
    assert 'plc = "bridge:/dev/ttyUSB1"' in cfg and 'camera = "/dev/video2"' in cfg
    staged_cfg = tmp_path / "staged.toml"
    staged_cfg.write_text(cfg.replace('"/opt/', f'"{root}/opt/').replace('"/var/', f'"{root}/var/')
                          .replace('camera = "/dev/video2"', f'images = "{tmp_path}"'))
    check = subprocess.run([str(prefix / "venv/bin/edge-inspect"), "--config", str(staged_cfg), "--check-config"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    # systemd-analyze verify on the unit as installed, with only the install prefix mapped into the root
    verify_dir = tmp_path / "verify"
    verify_dir.mkdir()
    (verify_dir / "edge-inspect.service").write_text(unit.replace("/opt/edge-inspect", str(prefix)))
    ver = subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(verify_dir / "edge-inspect.service")],
                         capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0 and ver.stderr.strip() == "", ver.stderr
    # uninstall keeps the audit trail unless --purge; --purge leaves nothing behind
    (root / "var/log/edge-inspect/audit.jsonl").write_text("{}\n")
    un = subprocess.run([str(REPO / "deploy.sh"), "uninstall", "--root", str(root)], capture_output=True, text=True, timeout=120)
    assert un.returncode == 0, un.stderr
    assert not prefix.exists() and not (root / UNIT).exists() and not (root / "etc/edge-inspect").exists()
    assert (root / "var/log/edge-inspect/audit.jsonl").exists()
    un = subprocess.run([str(REPO / "deploy.sh"), "uninstall", "--root", str(root), "--purge"], capture_output=True, text=True, timeout=120)
    assert un.returncode == 0, un.stderr
    assert not root.exists() or list(root.rglob("*")) == [], list(root.rglob("*"))


def test_install_refuses_without_a_model(tmp_path):
    out = subprocess.run([str(REPO / "deploy.sh"), "install", "--root", str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode != 0 and "--model tile.xml is required" in out.stderr
