# The quick start of docs/PYTHON.md §2, as run: in a directory where `coffer keys init` wrote coffer.toml
# (with COFFER_KEK set), `python quickstart.py`.

import coffer

ring = coffer.Keyring("coffer.toml")          # reads nothing yet: opened on first use
ring.ensure_scope("tenant:acme")              # creates the scope's first key version if new

ct = ring.encrypt("tenant:acme", "patients.ssn", "123-45-6789", context="patient-42", type="text")
print(ring.decrypt("tenant:acme", "patients.ssn", ct, context="patient-42", type="text"))   # '123-45-6789'
try:
    ring.decrypt("tenant:acme", "patients.ssn", ct, context="patient-43", type="text")   # DecryptionError
except coffer.DecryptionError as e:
    print("DecryptionError:", e)

ssn = ring.column("tenant:acme", "patients.ssn", type="text")   # names checked once; fastest path
cts = ssn.encrypt_batch(["123-45-6789", "987-65-4321"], contexts=["patient-42", "patient-43"])
print(ssn.decrypt_batch(cts, contexts=["patient-42", "patient-43"]))  # GIL released, all cores

print(ring.blind_index("tenant:acme", "patients.ssn", "ssn_bidx", "123 45 6789", bits=32, normalize=["digits"]).hex())
print(ring.rotate("tenant:acme"))                    # v2 active; v1 decrypt-only, still opens `ct`
print(ring.decrypt("tenant:acme", "patients.ssn", ct, context="patient-42", type="text"))
