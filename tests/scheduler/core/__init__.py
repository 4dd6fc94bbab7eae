import pytest

# The helpers assert too: let pytest explain their failures as it does the tests'.
pytest.register_assert_rewrite("tests.scheduler.core.builders")
