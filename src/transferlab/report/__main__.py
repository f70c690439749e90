"""python -m transferlab.report SWEEP_DIR"""

from transferlab.report.cli import main

main()
