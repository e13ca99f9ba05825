"""Step 3: the views that do the work in Plone, and the status view."""
