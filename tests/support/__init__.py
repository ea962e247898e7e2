"""What several test modules share, imported as `tests.support.<module>` (never from a test
module or a conftest, which hold tests and fixtures only):

- `sandboxes`: the repository root, `FakeClock`, the sandbox factory's type, the CLI's sandbox
  environment (`ENV`) and `Api`, a bare caller of the sandbox's wire protocol;
- `engine`: job specs, input files and state checks of the engine's tests;
- `processes`: real `batchmove` processes, threaded sandboxes and the artefacts checks of the
  reliability suites;
- `xlsx_files`: hand-made xlsx files (hostile ones included);
- `notify`: the notification receivers' secrets and a job that notifies;
- `console`: the console under test, in-process or as processes, and the browser's helpers.
"""
