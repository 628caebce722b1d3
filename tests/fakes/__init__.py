"""Local fakes of external services, served on 127.0.0.1 for real client libraries to use."""

# How long a test waits for something the code under test should do. A wait ends as soon as
# its event arrives, so a generous limit costs nothing when the code works; it only bounds how
# long a broken test hangs. A loaded two-core machine can take several seconds just to start
# a training subprocess or import torch, so limits of a few seconds fail working code.
WAIT_SECONDS = 60.0
