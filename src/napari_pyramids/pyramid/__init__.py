"""The pyramid math: methods and reducers, the validated plan, lazy levels."""
