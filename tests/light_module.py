"""A light module for the one-node tests (test_node.py, test_file_modes.py): macros in
its userconfig.xml, a script of each kind that logs, one that ignores its stop."""

LIGHT = """<!DOCTYPE safe>
<macro name="GREETING" value="hello from %WHO%"/>
<macro name="WHO" value="start_prim"/>
<safe>
  <service mode="light">
    <user nicestoptimeout="%STOPLIMIT%">
      <var name="GREETING" value="%GREETING%"/>
    </user>
  </service>
  <macro name="STOPLIMIT" value="2s"/>
</safe>
"""

SCRIPTS = {
    "prestart": "#!/bin/sh\necho prestart ran\n",
    "start_prim": '#!/bin/sh\necho "output of start_prim: $GREETING"\n'
                  'hakit printi "printi from start_prim in $SAFEMODULE"\n',
    # Ignores its stop: the 2 s limit of <user nicestoptimeout> must end it.
    "stop_prim": "#!/bin/sh\necho stopping $1\nsleep 30\n",
    "poststop": "#!/bin/sh\necho poststop $1\n",
}
