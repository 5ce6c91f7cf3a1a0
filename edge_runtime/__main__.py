from .cli import main
from .process import exit_with

exit_with(main())
