from defectscope.cli.main import main

main()
