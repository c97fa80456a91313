dat_path = 'temp_wh.dat'
n_channels_dat = 27
dtype = 'int16'
offset = 0
sample_rate = 30000.
hp_filtered = True