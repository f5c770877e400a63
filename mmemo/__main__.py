from mmemo.cli import main

main()
